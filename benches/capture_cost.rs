//! What the microscope costs: a forward pass that captures every resid_post and every attention
//! map against a plain one on the same 512-token prompt, and decode speed with a steering vector
//! at every layer against plain decode. `cargo bench --bench capture_cost [-- --device cuda]`.

use std::time::Instant;

use scalpel::backend::Backend;
use scalpel::cli::{Device, OnBackend, on_device};
use scalpel::forward::{Logits, Model};
use scalpel::generate::{GenerateOptions, generate};
use scalpel::model::{DEFAULT_MODEL, ModelFiles, models_dir};
use scalpel::probe::{Edit, Point, Positions, Probes};
use scalpel::sample::SamplingParams;

const PROMPT_TOKENS: usize = 512;
const DECODE: usize = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Bench {
    files: ModelFiles,
}

impl OnBackend for Bench {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> scalpel::Result<()> {
        let files = self.files;
        let name = backend.name();
        let model = Model::load(backend, &files)?;
        let c = &model.config;
        let text =
            "The history of science is a history of instruments: the telescope, the microscope and the \
                    printing press each changed what people could see and share. "
                .repeat(40);
        let mut ids = files.tokenizer.encode(&text)?;
        ids.truncate(PROMPT_TOKENS);
        let time = |probes: &mut dyn FnMut() -> Probes<B>| -> scalpel::Result<f64> {
            let mut runs = Vec::new();
            for i in 0..4 {
                let mut p = probes();
                let mut cache = model.new_cache(ids.len())?;
                let t = Instant::now();
                let logits = model.forward(&ids, 0, &mut cache, &mut p, Logits::Last)?;
                model.backend.download(&logits)?;
                if i > 0 {
                    runs.push(t.elapsed().as_secs_f64());
                }
            }
            Ok(median(runs))
        };
        let plain = time(&mut || Probes::none())?;
        let mut all = Vec::new();
        for l in 0..c.n_layers {
            all.push(Point::ResidPost(l));
            all.push(Point::AttnProbs(l));
        }
        let full = time(&mut || Probes::capturing(all.clone()))?;

        let opts = GenerateOptions {
            max_tokens: DECODE + 1,
            sampling: SamplingParams::default(),
            stop_at_eos: false,
        };
        let prompt = &ids[..32];
        let decode = |steer: bool| -> scalpel::Result<f64> {
            let mut runs = Vec::new();
            for _ in 0..3 {
                let mut probes = Probes::none();
                if steer {
                    let v: Vec<f32> =
                        (0..c.hidden_size).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
                    for l in 0..c.n_layers {
                        let vector = model.backend.upload(&v, &[v.len()])?;
                        probes.edit(
                            Point::ResidPost(l),
                            Edit::Add { vector, scale: 0.1, positions: Positions::All },
                        )?;
                    }
                }
                runs.push(
                    generate(&model, prompt, &opts, &mut probes, |_| Ok(true))?.decode_tokens_per_second(),
                );
            }
            Ok(median(runs))
        };
        let (d_plain, d_steer) = (decode(false)?, decode(true)?);
        println!("capture cost on {name}, {} ({} tokens):", DEFAULT_MODEL.file, ids.len());
        println!("  plain forward          {:8.1} ms", plain * 1e3);
        println!(
            "  capture all resid_post + attn_probs {:8.1} ms  = {:.2}× plain (goal ≤ 1.3× on CUDA)",
            full * 1e3,
            full / plain
        );
        println!("  decode plain           {d_plain:8.1} tok/s");
        println!(
            "  decode, steering at all {} layers {d_steer:8.1} tok/s  = {:+.1}% (goal: no more than 5% slower)",
            c.n_layers,
            100.0 * (d_steer / d_plain - 1.0)
        );
        Ok(())
    }
}

fn main() {
    scalpel::backend::cpu::use_this_thread_in_pool().expect("the thread pool");
    let device = if std::env::args().any(|a| a == "cuda") { Device::Cuda } else { Device::Cpu };
    let path = models_dir().join(DEFAULT_MODEL.file);
    let files = ModelFiles::open(Some(path.to_str().expect("utf-8 path")))
        .expect("default model (run scripts/setup.sh)");
    if let Err(e) = on_device(device, Bench { files }) {
        eprintln!("capture_cost: {e}");
        std::process::exit(1);
    }
}
