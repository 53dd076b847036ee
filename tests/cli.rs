//! The command line, run as a user runs it: the built binary on the default model.

mod common;

use common::{Golden, golden_dir, known_model, scalpel, scalpel_command, stderr, stdout};
use serde_json::Value;

fn model_arg() -> String {
    known_model("smollm2-135m").to_string_lossy().into_owned()
}

#[test]
fn generate_streams_the_greedy_continuation_of_transformers() {
    let g = Golden::open(&golden_dir().join("smollm2/prompt_0.safetensors"));
    let o = scalpel(&[
        "generate",
        "-m",
        &model_arg(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let greedy = g.meta("greedy_text").unwrap();
    // The first 8 greedy tokens of transformers: " Paris.\n\nThe answer is: 2" ...
    let out = stdout(&o);
    assert!(greedy.starts_with(out.trim_end_matches('\n')), "ours {out:?} vs transformers {greedy:?}");
    assert!(out.starts_with(" Paris."), "{out:?}");
    assert!(stderr(&o).contains("tok/s"), "speeds are reported on stderr");
}

/// The CLI's thread is one of the pool's workers (its only one with one thread): every thread
/// count gives transformers' greedy ids, since each row's product and each head's attention are
/// computed alike however the work is split.
#[test]
fn generate_gives_the_same_ids_on_every_thread_count() {
    let g = Golden::open(&golden_dir().join("smollm2/prompt_0.safetensors"));
    let want: Vec<u64> = g.i64("greedy").iter().take(10).map(|&x| x as u64).collect();
    let args = ["generate", "-m", &model_arg(), "-p", "The capital of France is", "-n", "10", "--json", "-q"];
    for threads in ["1", "2", "3"] {
        let o = common::scalpel_env(&args, &[("RAYON_NUM_THREADS", threads)]);
        assert!(o.status.success(), "{threads} threads: {}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
        let got: Vec<u64> =
            v["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(got, want, "{threads} threads");
    }
}

#[test]
fn generate_json_reports_ids_text_speed_and_memory() {
    let o = scalpel(&[
        "generate",
        "-m",
        &model_arg(),
        "-p",
        "The capital of France is",
        "-n",
        "12",
        "--json",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "--quiet keeps stderr empty: {}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(v["prompt_ids"], serde_json::json!([504, 3575, 282, 4649, 314]));
    let generated: Vec<u64> =
        v["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let g = Golden::open(&golden_dir().join("smollm2/prompt_0.safetensors"));
    let want: Vec<u64> = g.i64("greedy").iter().take(12).map(|&x| x as u64).collect();
    assert_eq!(generated, want);
    assert!(v["text"].as_str().unwrap().starts_with(" Paris."));
    assert!(v["prefill_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    // The weights stay as stored (the mapped file): peak resident memory within 1.15 × (file +
    // KV cache) + 64 MiB for the tokenizer and the runtime.
    let file = std::fs::metadata(model_arg()).unwrap().len() as f64;
    let kv = (2 * 30 * (5 + 12) * 192 * 4) as f64;
    let rss = v["peak_rss_bytes"].as_u64().unwrap() as f64;
    let bound = 1.15 * (file + kv) + 64.0 * 1048576.0;
    assert!(rss <= bound, "peak RSS {:.0} MiB over the bound {:.0} MiB", rss / 1048576.0, bound / 1048576.0);
}

/// `--max-tokens 0` runs the prompt and emits nothing, on every device (it used to emit one token).
/// Several prompts as one batch: one JSON line per prompt in order, each with the greedy tokens of
/// transformers' golden where there is one and what the prompt gets alone otherwise; an empty line
/// of the prompts file is reported by its line and the others still run.
#[test]
fn generate_runs_several_prompts_as_a_batch_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.txt");
    std::fs::write(&file, "Once upon a time\n\n1, 2, 3, 4,\n").unwrap();
    let m = model_arg();
    let o = scalpel(&[
        "generate",
        "-m",
        &m,
        "-p",
        "The capital of France is",
        "--prompts",
        file.to_str().unwrap(),
        "-n",
        "12",
        "--json",
        "-q",
    ]);
    assert!(!o.status.success(), "a bad prompt fails the command after the others ran");
    assert!(stderr(&o).contains("line 2") && stderr(&o).contains("empty"), "{}", stderr(&o));
    let lines: Vec<Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 4, "one line per prompt: {}", stdout(&o));
    let g = Golden::open(&golden_dir().join("smollm2/prompt_0.safetensors"));
    let want: Vec<u64> = g.i64("greedy").iter().take(12).map(|&x| x as u64).collect();
    let ids = |v: &Value| -> Vec<u64> {
        v["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
    };
    assert_eq!(ids(&lines[0]), want, "the first prompt's greedy tokens are transformers'");
    assert!(lines[2]["error"].as_str().unwrap().contains("empty"), "{}", lines[2]);
    for (i, p) in [(1, "Once upon a time"), (3, "1, 2, 3, 4,")] {
        let alone = scalpel(&["generate", "-m", &m, "-p", p, "-n", "12", "--json", "-q"]);
        let alone: Value = serde_json::from_str(stdout(&alone).trim()).unwrap();
        assert_eq!(ids(&lines[i]), ids(&alone), "{p:?} in the batch and alone");
        assert_eq!(lines[i]["text"], alone["text"]);
    }
}

#[test]
fn generate_max_tokens_zero_emits_no_token() {
    for device in ["cpu", "mock"] {
        let args =
            ["generate", "-m", &model_arg(), "-p", "The capital of France is", "-n", "0", "--device", device];
        let o = scalpel(&args);
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "", "{device}: no text");
        assert!(stderr(&o).contains("decode 0 tokens"), "{device}: {}", stderr(&o));
        let o = scalpel(&[&args[..], &["--json", "-q"]].concat());
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
        assert_eq!(v["generated_ids"], serde_json::json!([]), "{device}");
        assert_eq!(v["text"], "", "{device}");
        assert_eq!(v["stop"], "max_tokens", "{device}");
    }
}

/// `--weights f32` is the reference path: the same tokens, with the f32 weights in memory.
#[test]
fn f32_weights_give_the_same_tokens() {
    let run = |weights: &str| {
        let o = scalpel(&[
            "generate",
            "-m",
            &model_arg(),
            "-p",
            "The capital of France is",
            "-n",
            "12",
            "--json",
            "-q",
            "--weights",
            weights,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(stdout(&o).trim()).expect("one JSON object")
    };
    let (stored, f32) = (run("stored"), run("f32"));
    assert_eq!(stored["generated_ids"], f32["generated_ids"]);
    let (a, b) = (stored["peak_rss_bytes"].as_u64().unwrap(), f32["peak_rss_bytes"].as_u64().unwrap());
    assert!(b > a + (300 << 20), "f32 weights take ~500 MiB more than the Q4_1 file: {b} vs {a}");
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let run = |seed: &str| {
        let o = scalpel(&[
            "generate",
            "-m",
            &model_arg(),
            "-p",
            "Once upon a time",
            "-n",
            "16",
            "-t",
            "0.9",
            "--top-p",
            "0.95",
            "--top-k",
            "50",
            "--seed",
            seed,
            "--json",
            "-q",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        v["generated_ids"].clone()
    };
    assert_eq!(run("1"), run("1"));
    let others: Vec<Value> = (2..6).map(|s| run(&s.to_string())).collect();
    assert!(others.iter().any(|o| *o != run("1")), "different seeds should differ somewhere");
}

#[test]
fn chat_applies_the_models_template() {
    let o = scalpel(&["tokenize", "-m", &model_arg(), "--chat", "--json", "What is 2+2?"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let strings: Vec<&str> = v["strings"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let text = strings.concat();
    assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), "{text:?}");
    assert!(text.ends_with("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"), "{text:?}");
    let o = scalpel(&[
        "generate",
        "-m",
        &model_arg(),
        "--chat",
        "-p",
        "What is the capital of France?",
        "-n",
        "24",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Paris"), "{}", stdout(&o));
}

#[test]
fn tokenize_prints_ids_and_strings() {
    let o = scalpel(&["tokenize", "-m", &model_arg(), "The capital of France is"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[1].trim_start().starts_with("3575") && lines[1].contains("\" capital\""), "{out}");
}

#[test]
fn params_lists_every_tensor_and_the_total() {
    let o = scalpel(&["params", "-m", &model_arg()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("token_embd.weight") && out.contains("[49152, 576]") && out.contains("Q8_0"),
        "{out}"
    );
    assert!(out.contains("blk.29.ffn_down.weight") && out.contains("Q4_1"), "{out}");
    assert!(out.contains("272 tensors, 134515008 parameters (134.5M)"), "{out}");
}

#[test]
fn trace_writes_the_dump_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.safetensors");
    let out_s = out.to_str().unwrap();
    let o = scalpel(&["trace", "-m", &model_arg(), "-p", "The capital of France is", "-o", out_s, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Golden::open(&out);
    let (embed, shape) = g.f32("embed");
    assert_eq!(shape, vec![5, 576]);
    for l in 0..30 {
        assert_eq!(g.f32(&format!("blocks.{l}.resid_post")).1, vec![5, 576]);
    }
    assert_eq!(g.f32("final_norm").1, vec![5, 576]);
    assert_eq!(g.f32("logits").1, vec![5, 49152]);
    assert_eq!(g.i64("tokens"), vec![504, 3575, 282, 4649, 314]);
    assert!(!g.has("blocks.0.attn_probs"), "only the default points");
    assert_eq!(g.meta("prompt").unwrap(), "The capital of France is");
    assert_eq!(g.meta("arch").unwrap(), "llama");
    let strs: Vec<String> = serde_json::from_str(&g.meta("token_strs").unwrap()).unwrap();
    assert_eq!(strs, ["The", " capital", " of", " France", " is"]);
    // The dump agrees with transformers too.
    let golden = Golden::open(&golden_dir().join("smollm2/prompt_0.safetensors"));
    assert!(common::rel_l2(&embed, &golden.f32("embed").0) < 1e-6);

    // An existing file is not replaced without --force, and stays as it was.
    let before = std::fs::read(&out).unwrap();
    let o = scalpel(&["trace", "-m", &model_arg(), "-p", "Other", "-o", out_s, "--points", "logits"]);
    common::assert_clean_failure(&o, "invalid", "--force");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let o = scalpel(&[
        "trace",
        "-m",
        &model_arg(),
        "-p",
        "Other",
        "-o",
        out_s,
        "--points",
        "blocks.3.attn_probs,blocks.*.mlp_post",
        "--force",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Golden::open(&out);
    assert_eq!(g.f32("blocks.3.attn_probs").1, vec![9, 1, 1]);
    assert_eq!(g.f32("blocks.29.mlp_post").1, vec![1, 1536]);
    assert!(!g.has("logits"));
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn help_explains_every_flag() {
    for sub in [
        "generate",
        "trace",
        "tokenize",
        "params",
        "lens",
        "attention",
        "neighbors",
        "analogy",
        "similarity",
        "steer build",
        "patchscope",
        "neurons",
        "pca",
        "report",
        "patch",
        "attribute",
        "top-examples",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let o = scalpel(&args);
        assert!(o.status.success());
        let help = stdout(&o);
        let lines: Vec<&str> = help.lines().collect();
        let mut flags = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("  -") {
                flags += 1;
                // Short help explains a flag on its line; long help on the next, deeper-indented one.
                let same_line =
                    line.trim_start().split_once("  ").is_some_and(|(_, rest)| !rest.trim().is_empty());
                let next = lines.get(i + 1).copied().unwrap_or("");
                let next_line = next.starts_with("          ") && !next.trim().is_empty();
                assert!(same_line || next_line, "{sub}: {line:?} has no explanation");
            }
        }
        assert!(flags >= 3, "{sub}: {help}");
    }
}

#[test]
fn params_compare_puts_llama_and_gemma_side_by_side() {
    let o = scalpel(&["params", "-m", "smollm2-135m", "--compare", "gemma3-270m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (row, a, b) in [
        ("vocab size", "49152", "262144"),
        ("hidden size", "576", "640"),
        ("layers", "30", "18"),
        ("heads", "9", "4"),
        ("KV heads", "3", "1"),
        ("head dim", "64", "256"),
        ("FFN size", "1536", "2048"),
    ] {
        let line = out.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("{row} missing: {out}"));
        let cells: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert_eq!(cells, [a, b], "{line}");
    }
    assert!(out.contains("134515008 (134.5M)") && out.contains("268098176 (268.1M)"), "{out}");
}

/// SCALPEL_CPU_ISA forces the products' kernels: the portable ones give the same tokens, and a
/// name this CPU cannot run is an error that says what it can.
#[test]
fn the_cpu_kernels_can_be_forced() {
    let args = ["generate", "-m", &model_arg(), "-p", "The capital of France is", "-n", "6", "--json", "-q"];
    let ids = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_str::<Value>(stdout(o).trim()).unwrap()["generated_ids"].clone()
    };
    let auto = ids(&scalpel(&args));
    assert_eq!(ids(&common::scalpel_env(&args, &[("SCALPEL_CPU_ISA", "portable")])), auto);
    let o = common::scalpel_env(&args, &[("SCALPEL_CPU_ISA", "avx513")]);
    common::assert_clean_failure(&o, "invalid", "SCALPEL_CPU_ISA");
}

/// `scalpel … | head` closing the pipe early ends scalpel quietly (as SIGPIPE ends other Unix
/// tools), not with a panic from println!.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    use std::io::BufRead;
    let text = "the apple is green ".repeat(5000);
    let mut child = scalpel_command(&["tokenize", "-m", "smollm2-135m", &text, "-q"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE: {:?} {err}", o.status);
}
