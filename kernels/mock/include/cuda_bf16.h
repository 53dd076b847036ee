// The mock device build resolves the kernels' CUDA includes here: mock_cuda.h (force-included) has it all.
#pragma once
#include "../mock_cuda.h"
