// Host helpers with no kernels: error strings and NVTX ranges.
#include "common.cuh"

#ifndef SCALPEL_NO_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

extern "C" const char *scalpel_error_string(int code) { return cudaGetErrorString((cudaError_t)code); }

extern "C" void scalpel_nvtx_push(const char *name) {
#ifndef SCALPEL_NO_NVTX
    nvtxRangePushA(name);
#else
    (void)name;
#endif
}

extern "C" void scalpel_nvtx_pop(void) {
#ifndef SCALPEL_NO_NVTX
    nvtxRangePop();
#endif
}

extern "C" int scalpel_nvtx_enabled(void) {
#ifndef SCALPEL_NO_NVTX
    return 1;
#else
    return 0;
#endif
}
