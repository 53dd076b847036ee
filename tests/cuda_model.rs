//! The whole model on the CUDA backend against the CPU reference and transformers' goldens: every
//! layer's residual stream and the logits within bf16 tolerance, the same 32 greedy tokens,
//! recorded (graph) decoding equal to plain decoding, interventions on the GPU, and the microscope
//! commands with --device cuda. Prints why it skipped when there is no GPU.

mod common;

#[cfg(feature = "cuda")]
mod gpu {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use scalpel::backend::Backend;
    use scalpel::backend::cpu::Cpu;
    use scalpel::backend::cuda::Cuda;
    use scalpel::forward::{Logits, Model};
    use scalpel::generate::{GenerateOptions, generate};
    use scalpel::model::ModelFiles;
    use scalpel::probe::{Edit, Point, Positions, Probes};
    use scalpel::sample::SamplingParams;

    use super::common::reference::{goldens, ids_of};
    use super::common::{golden_dir, open_known, rel_l2, scalpel, stderr, stdout};

    /// A residual stream kept in f32 but fed through bf16 weights and activations for 30 layers.
    const MODEL_TOL: f64 = 5e-2;

    struct Both {
        files: ModelFiles,
        cpu: Model<Cpu>,
        gpu: Model<Cuda>,
    }

    fn load(alias: &str) -> Both {
        let files = open_known(alias);
        let cpu = Model::load(Cpu, &files).unwrap();
        let gpu = Model::load(Cuda::new(0).unwrap(), &files).unwrap();
        Both { files, cpu, gpu }
    }

    fn greedy<B: scalpel::backend::Backend>(
        m: &Model<B>,
        ids: &[u32],
        n: usize,
        probes: &mut Probes<B>,
    ) -> Vec<u32> {
        let opts = GenerateOptions { max_tokens: n, sampling: SamplingParams::default(), stop_at_eos: false };
        generate(m, ids, &opts, probes, |_| Ok(true)).unwrap().generated_ids
    }

    fn forward_matches(alias: &str, dir: &str) {
        let b = load(alias);
        let c = &b.files.config;
        for g in goldens(&golden_dir().join(dir), "prompt") {
            let ids = ids_of(&g);
            let points: Vec<Point> = (0..c.n_layers).map(Point::ResidPost).chain([Point::Logits]).collect();
            let run = |probes_cpu: &mut Probes<Cpu>, probes_gpu: &mut Probes<Cuda>| {
                let mut cc = b.cpu.new_cache(ids.len()).unwrap();
                b.cpu.forward(&ids, 0, &mut cc, probes_cpu, Logits::All).unwrap();
                let mut gc = b.gpu.new_cache(ids.len()).unwrap();
                b.gpu.forward(&ids, 0, &mut gc, probes_gpu, Logits::All).unwrap();
            };
            let (mut pc, mut pg) = (Probes::capturing(points.clone()), Probes::capturing(points.clone()));
            run(&mut pc, &mut pg);
            let mut worst = 0f64;
            for p in &points {
                let (a, bb) = (&pg.captured()[p][0], &pc.captured()[p][0]);
                let row = a.shape[1];
                for (r, (x, y)) in a.data.chunks(row).zip(bb.data.chunks(row)).enumerate() {
                    let e = rel_l2(x, y);
                    assert!(
                        e <= MODEL_TOL,
                        "{alias} {:?} {p} row {r}: CUDA vs CPU relative error {e:e}",
                        g.meta("prompt")
                    );
                    worst = worst.max(e);
                }
            }
            println!("  {alias} {:?}: worst row error CUDA vs CPU {worst:.2e}", g.meta("prompt"));
            let want: Vec<u32> = g.i64("greedy").iter().map(|&i| i as u32).collect();
            let got = greedy(&b.gpu, &ids, want.len(), &mut Probes::none());
            assert_eq!(got, want, "{alias}: CUDA greedy tokens of {:?} vs transformers", g.meta("prompt"));
        }
    }

    fn smollm2_matches_cpu_and_transformers() {
        forward_matches("smollm2-135m", "smollm2");
    }

    fn gemma3_matches_cpu_and_transformers() {
        forward_matches("gemma3-270m", "gemma3");
    }

    /// Recorded graph replays give exactly the plain steps' tokens.
    fn graph_replay_equals_plain_decoding() {
        let b = load("smollm2-135m");
        let ids = b.files.tokenizer.encode("Once upon a time, in a small village by the sea,").unwrap();
        let with = greedy(&b.gpu, &ids, 48, &mut Probes::none());
        // SAFETY of the env var: single-threaded here; the backend reads it per generation.
        unsafe { std::env::set_var("SCALPEL_CUDA_GRAPHS", "0") };
        let without = greedy(&b.gpu, &ids, 48, &mut Probes::none());
        unsafe { std::env::remove_var("SCALPEL_CUDA_GRAPHS") };
        assert_eq!(with, without);
        // Steering replays too: a zero-scale vector at every layer changes nothing.
        let mut p = Probes::none();
        for l in 0..b.files.config.n_layers {
            let v = b.gpu.backend.upload(&vec![1.0; 576], &[576]).unwrap();
            p.edit(Point::ResidPost(l), Edit::Add { vector: v, scale: 0.0, positions: Positions::All })
                .unwrap();
        }
        assert_eq!(greedy(&b.gpu, &ids, 48, &mut p), with);
    }

    /// Device sampling follows the same rule and seed as the host: the same text, barring a draw
    /// that falls on a boundary moved by bf16 logits.
    fn device_sampling_matches_the_host_rule() {
        let b = load("smollm2-135m");
        let ids = b.files.tokenizer.encode("The weather today is").unwrap();
        let opts = GenerateOptions {
            max_tokens: 12,
            sampling: SamplingParams {
                temperature: 0.8,
                top_k: Some(50),
                top_p: Some(0.95),
                seed: 3,
                ..Default::default()
            },
            stop_at_eos: false,
        };
        let a = generate(&b.gpu, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap().generated_ids;
        let c = generate(&b.cpu, &ids, &opts, &mut Probes::none(), |_| Ok(true)).unwrap().generated_ids;
        assert_eq!(a[0], c[0], "the first sampled token: GPU {a:?} vs CPU {c:?}");
    }

    fn microscope_on_cuda() {
        let o = scalpel(&["lens", "-p", "The capital of France is", "--device", "cuda", "--json", "-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["layers"][29][4][0]["token"], " Paris");
        let o = scalpel(&[
            "attention",
            "-p",
            "the apple is green. what color is the apple?",
            "--find",
            "--query",
            "apple",
            "--key",
            "green",
            "--device",
            "cuda",
            "--json",
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert!(v["heads"][0]["score"].as_f64().unwrap() > 0.25, "{v}");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.safetensors");
        let o = scalpel(&[
            "trace",
            "-p",
            "Hello there",
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cuda",
            "--points",
            "blocks.*.attn_probs,logits",
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = scalpel(&[
            "generate",
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "--device",
            "cuda",
            "--profile",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("matmul") && stderr(&o).contains("attention"), "{}", stderr(&o));
    }

    pub fn main() {
        let tests: [(&str, fn()); 5] = [
            ("smollm2_matches_cpu_and_transformers", smollm2_matches_cpu_and_transformers),
            ("gemma3_matches_cpu_and_transformers", gemma3_matches_cpu_and_transformers),
            ("graph_replay_equals_plain_decoding", graph_replay_equals_plain_decoding),
            ("device_sampling_matches_the_host_rule", device_sampling_matches_the_host_rule),
            ("microscope_on_cuda", microscope_on_cuda),
        ];
        let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        let chosen: Vec<_> = tests
            .iter()
            .filter(|(n, _)| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str())))
            .collect();
        if !Cuda::available() {
            println!(
                "cuda_model: {} tests SKIPPED — no CUDA driver or GPU here; run scripts/gpu_check.sh on a GPU machine",
                chosen.len()
            );
            return;
        }
        let mut failed = Vec::new();
        for (name, f) in chosen {
            let t = std::time::Instant::now();
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(()) => println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64()),
                Err(_) => {
                    println!("test {name} ... FAILED");
                    failed.push(*name);
                }
            }
        }
        if !failed.is_empty() {
            println!("cuda_model: FAILED {failed:?}");
            std::process::exit(1);
        }
        println!("cuda_model: all passed");
    }
}

fn main() {
    #[cfg(feature = "cuda")]
    gpu::main();
    #[cfg(not(feature = "cuda"))]
    println!("cuda_model: SKIPPED — this build has no CUDA backend (--no-default-features)");
}
