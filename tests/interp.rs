//! The microscope on the default model: the logit lens against transformers, the lecture's
//! observations (apple drifting from Apple, a head where the second "apple" looks at "green"),
//! identities that must hold exactly (a self-patch, a zero-scale steer), ablation orthogonality,
//! pictures that decode and carry ink, and the HTML report in headless Chromium.

mod common;

use std::path::Path;

use common::reference::{goldens, ids_of};
use common::{Golden, assert_clean_failure, golden_dir, known_model, open_known, scalpel, stderr, stdout};
use scalpel::backend::cpu::Cpu;
use scalpel::forward::Model;
use scalpel::interp::lens::lens_logits;
use serde_json::Value;

fn smol() -> String {
    known_model("smollm2-135m").to_string_lossy().into_owned()
}

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Our lens log-probabilities of transformers' top-10 candidates, at every layer and position.
fn check_lens(alias: &str, dir: &str) {
    let files = open_known(alias);
    let model = Model::load(Cpu, &files).unwrap();
    let vocab = files.config.vocab_size;
    for g in goldens(&golden_dir().join(dir), "prompt") {
        let ids = ids_of(&g);
        let t = ids.len();
        let lens = lens_logits(&model, &ids).unwrap();
        let want_ids = g.i64("lens_top_ids");
        let (want_lp, shape) = g.f32("lens_top_logprobs");
        let k = shape[2];
        for (l, logits) in lens.iter().enumerate() {
            for p in 0..t {
                let row = &logits[p * vocab..(p + 1) * vocab];
                let lse = scalpel::interp::log_sum_exp(row);
                for j in 0..k {
                    let i = (l * t + p) * k + j;
                    let ours = row[want_ids[i] as usize] as f64 - lse;
                    let theirs = want_lp[i] as f64;
                    assert!(
                        (ours - theirs).abs() <= 1e-4 * theirs.abs().max(1.0),
                        "{alias} {:?} layer {l} position {p} candidate {j}: {ours} vs {theirs}",
                        g.meta("prompt")
                    );
                }
                // transformers' top-1 is ours too, unless the two are tied within the tolerance.
                let ours_top = scalpel::interp::top_k(row, 1)[0];
                let top = want_ids[(l * t + p) * k] as usize;
                assert!(
                    ours_top == top || (row[top] - row[ours_top]).abs() < 1e-4,
                    "{alias} layer {l} pos {p}"
                );
            }
        }
    }
}

#[test]
fn logit_lens_matches_transformers_smollm2() {
    check_lens("smollm2-135m", "smollm2");
}

#[test]
fn logit_lens_matches_transformers_gemma3() {
    check_lens("gemma3-270m", "gemma3");
}

#[test]
fn lens_command_reads_paris_out_of_the_last_layer() {
    let v = json_of(&scalpel(&[
        "lens",
        "-m",
        &smol(),
        "-p",
        "The capital of France is",
        "--top",
        "3",
        "--json",
        "-q",
    ]));
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    let last = &layers[29]["positions"][4]["top"][0];
    assert_eq!(
        (layers[29]["layer"].as_u64(), layers[29]["positions"][4]["position"].as_u64()),
        (Some(29), Some(4))
    );
    assert_eq!(layers[29]["positions"][4]["input"], " is");
    assert_eq!(last["token"], " Paris");
    assert!(last["prob"].as_f64().unwrap() > 0.5);
    // An early layer does not know yet.
    assert_ne!(layers[2]["positions"][4]["top"][0]["token"], " Paris");
}

#[test]
fn head_search_finds_where_the_second_apple_looks_at_green() {
    let prompt = "the apple is green. what color is the apple?";
    let v = json_of(&scalpel(&[
        "attention",
        "-m",
        &smol(),
        "-p",
        prompt,
        "--find",
        "--query",
        "apple",
        "--key",
        "green",
        "--json",
        "-q",
    ]));
    assert_eq!(v["query"], 9, "the second apple");
    assert_eq!(v["keys"], serde_json::json!([3]));
    let best = &v["heads"][0];
    assert!(best["score"].as_f64().unwrap() > 0.25, "{best}");
    // The same number read from a trace of that layer.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let layer = best["layer"].as_u64().unwrap();
    let o = scalpel(&[
        "trace",
        "-m",
        &smol(),
        "-p",
        prompt,
        "-o",
        out.to_str().unwrap(),
        "--points",
        &format!("blocks.{layer}.attn_probs"),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (probs, shape) = Golden::open(&out).f32(&format!("blocks.{layer}.attn_probs"));
    let (t, h) = (shape[1], best["head"].as_u64().unwrap() as usize);
    let p = probs[h * t * t + 9 * t + 3] as f64;
    assert!((p - best["score"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn sinks_rank_heads_by_mass_on_the_first_token() {
    let v = json_of(&scalpel(&[
        "attention",
        "-m",
        &smol(),
        "-p",
        "the apple is green. what color is the apple?",
        "--sinks",
        "--top",
        "5",
        "--json",
        "-q",
    ]));
    let heads = v["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 5);
    let scores: Vec<f64> = heads.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert!(scores[0] > 0.9, "SmolLM2 has strong attention sinks: {scores:?}");
}

#[test]
fn apple_the_fruit_drifts_from_apple_the_company() {
    let fruit = "I ate a red apple for lunch";
    let v = json_of(&scalpel(&[
        "similarity",
        "-m",
        &smol(),
        "--a",
        fruit,
        "--a-token",
        "apple",
        "--b",
        "My favourite fruit is a crisp apple from the orchard",
        "--b-token",
        "apple",
        "--b",
        "She works as an engineer at Apple in Cupertino",
        "--b-token",
        "Apple",
        "--json",
        "-q",
    ]));
    let series = |i: usize| -> Vec<f64> {
        v["comparisons"][i]["similarity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cosine"].as_f64().unwrap())
            .collect()
    };
    let (fruit2, company) = (series(0), series(1));
    assert_eq!(fruit2.len(), 31, "embed + 30 layers");
    // Two fruit contexts stay closer than fruit and company, at every layer.
    assert!(fruit2.iter().zip(&company).all(|(f, c)| f > c), "{fruit2:?} vs {company:?}");
    // Fruit vs company: close after the first layers, apart at the end.
    let early = company[1..6].iter().sum::<f64>() / 5.0;
    let late = company[26..].iter().sum::<f64>() / 5.0;
    assert!(late < early - 0.05, "early {early:.3}, late {late:.3}");
    assert!(fruit2[26..].iter().all(|&f| f > 0.85), "{fruit2:?}");
}

#[test]
fn a_self_patch_reproduces_the_unpatched_generation() {
    let target = "cat -> cat\n1135 -> 1135\nhello -> hello\n?";
    let plain = json_of(&scalpel(&["generate", "-m", &smol(), "-p", target, "-n", "10", "--json", "-q"]));
    // Source = target, same layer and position (the placeholder is the last token).
    for layer in ["3", "15", "29"] {
        let v = json_of(&scalpel(&[
            "patchscope",
            "-m",
            &smol(),
            "--source",
            target,
            "--source-layer",
            layer,
            "--source-pos",
            "-1",
            "--target",
            target,
            "--placeholder",
            "?",
            "-n",
            "10",
            "--json",
            "-q",
        ]));
        assert_eq!(v["results"][0]["generated_ids"], plain["generated_ids"], "layer {layer}");
    }
    // A real patch: "France" read at an early layer comes back out.
    let v = json_of(&scalpel(&[
        "patchscope",
        "-m",
        &smol(),
        "--source",
        "Paris is the capital of France",
        "--source-layer",
        "4",
        "-n",
        "6",
        "--json",
        "-q",
    ]));
    assert!(v["results"][0]["text"].as_str().unwrap().contains("France"), "{v}");
    let r = &v["results"][0];
    assert_eq!(r["tokens"].as_array().unwrap().len(), r["generated_ids"].as_array().unwrap().len());
    // The unpatched baseline is the target's own greedy generation, and the sweep shows it first.
    let plain6 = json_of(&scalpel(&["generate", "-m", &smol(), "-p", target, "-n", "6", "--json", "-q"]));
    assert_eq!(v["unpatched"]["generated_ids"], plain6["generated_ids"]);
    let o = scalpel(&[
        "patchscope",
        "-m",
        &smol(),
        "--source",
        "Paris is the capital of France",
        "--sweep",
        "-n",
        "3",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 + 30, "a header, the unpatched line, one line per layer: {out}");
    assert!(lines[1].trim_start().starts_with("unpatched  \""), "{out}");
    assert!(lines[2].trim_start().starts_with("0 →   0   \""), "{out}");
    let o = scalpel(&["patchscope", "-m", &smol(), "--source", "x", "--placeholder", "#", "-n", "3"]);
    assert_clean_failure(&o, "invalid", "placeholder");
}

fn build_vector(dir: &Path, extra: &[&str]) -> String {
    std::fs::write(
        dir.join("pos.txt"),
        "I love this, it makes me so happy!\nWhat a wonderful, joyful day.\nThis is fantastic news.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("neg.txt"),
        "I hate this, it makes me so sad.\nWhat a terrible, miserable day.\nThis is awful news.\n",
    )
    .unwrap();
    let out = dir.join("happy.gguf");
    let mut args = vec![
        "steer",
        "build",
        "-m",
        "smollm2-135m",
        "--positive",
        dir.join("pos.txt").to_str().unwrap(),
        "--negative",
        dir.join("neg.txt").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--force",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = scalpel(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    out.to_string_lossy().into_owned()
}

#[test]
fn steering_vectors_are_llama_cpp_control_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let v = build_vector(dir.path(), &["--layers", "8-12"]);
    let g = scalpel::model::gguf::GgufFile::open(Path::new(&v)).unwrap();
    assert_eq!(g.opt_str("general.architecture").unwrap(), Some("controlvector"));
    assert_eq!(g.opt_str("controlvector.model_hint").unwrap(), Some("llama"));
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["direction.8", "direction.9", "direction.10", "direction.11", "direction.12"]);
    assert!(
        g.tensors().iter().all(|t| t.shape() == [576] && t.dtype == scalpel::model::quant::GgmlType::F32)
    );

    // Scale 0 changes nothing at all; a real scale changes the text.
    let base = [
        "generate",
        "-m",
        "smollm2-135m",
        "-p",
        "Today I went to the market and",
        "-n",
        "16",
        "--json",
        "-q",
    ];
    let plain = json_of(&scalpel(&base));
    let zero = format!("{v}:0");
    let with = |spec: &str| json_of(&scalpel(&[&base[..], &["--steer", spec]].concat()));
    assert_eq!(with(&zero)["generated_ids"], plain["generated_ids"]);
    assert_ne!(with(&format!("{v}:1.5@10"))["generated_ids"], plain["generated_ids"]);
    // Steering at two layers is the sum of the two.
    let two = json_of(&scalpel(
        &[&base[..], &["--steer", &format!("{v}:0.5@9"), "--steer", &format!("{v}:0.5@11")]].concat(),
    ));
    assert_ne!(two["generated_ids"], plain["generated_ids"]);

    // PCA vectors point the same way as mean differences.
    let p = build_vector(dir.path(), &["--layers", "10", "--method", "pca"]);
    let mean = scalpel::interp::steer::ControlVector::read(Path::new(&build_vector(
        dir.path(),
        &["--layers", "10"],
    )))
    .unwrap();
    let pca = scalpel::interp::steer::ControlVector::read(Path::new(&p)).unwrap();
    assert!(scalpel::interp::cosine(&mean.directions[&10], &pca.directions[&10]) > 0.5);

    let o = scalpel(&[&base[..], &["--steer", &format!("{v}@25")]].concat());
    assert_clean_failure(&o, "invalid", "none of the selected layers");
}

#[test]
fn ablation_leaves_every_residual_orthogonal_to_the_direction() {
    let dir = tempfile::tempdir().unwrap();
    let v = build_vector(dir.path(), &["--layers", "12"]);
    let out = dir.path().join("t.safetensors");
    let o = scalpel(&[
        "trace",
        "-m",
        "smollm2-135m",
        "-p",
        "I hate rainy mornings",
        "-o",
        out.to_str().unwrap(),
        "--ablate",
        &v,
        "--points",
        "blocks.*.resid_post,blocks.*.resid_mid",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cv = scalpel::interp::steer::ControlVector::read(Path::new(&v)).unwrap();
    let dir_v = &cv.directions[&12];
    let g = Golden::open(&out);
    for l in 0..30 {
        for point in ["resid_post", "resid_mid"] {
            let (x, shape) = g.f32(&format!("blocks.{l}.{point}"));
            for row in x.chunks(shape[1]) {
                let c = scalpel::interp::cosine(row, dir_v);
                assert!(c.abs() < 1e-5, "blocks.{l}.{point}: cosine {c}");
            }
        }
    }
}

#[test]
fn neighbours_and_analogies() {
    let v =
        json_of(&scalpel(&["neighbors", "-m", &smol(), "--token", "apple", "--top", "5", "--json", "-q"]));
    let near: Vec<&str> =
        v["embedding"].as_array().unwrap().iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert!(near.iter().any(|t| t.trim().eq_ignore_ascii_case("apples")), "{near:?}");
    assert!(v["lm_head"].is_null(), "SmolLM2 ties its LM head");
    let v = json_of(&scalpel(&[
        "analogy",
        "-m",
        "gemma3-270m",
        "冷 - cold + small",
        "--top",
        "3",
        "--json",
        "-q",
    ]));
    let top: Vec<&str> = v["analogy"]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap().trim())
        .collect();
    assert!(top.contains(&"小"), "{top:?}");
    let v = json_of(&scalpel(&[
        "analogy",
        "-m",
        "gemma3-270m",
        "king - man + woman",
        "--top",
        "3",
        "--json",
        "-q",
    ]));
    let top: Vec<String> = v["analogy"]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap().trim().to_lowercase())
        .collect();
    assert!(top.contains(&"queen".to_string()), "{top:?}");
}

#[test]
fn neurons_agree_with_the_mlp_post_trace() {
    let prompt = "The capital of France is Paris";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let o = scalpel(&[
        "trace",
        "-m",
        &smol(),
        "-p",
        prompt,
        "-o",
        out.to_str().unwrap(),
        "--points",
        "blocks.10.mlp_post",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (acts, shape) = Golden::open(&out).f32("blocks.10.mlp_post");
    let v = json_of(&scalpel(&[
        "neurons",
        "-m",
        &smol(),
        "-p",
        prompt,
        "--layer",
        "10",
        "--neuron",
        "1000",
        "--json",
        "-q",
    ]));
    let ours: Vec<f64> = v["activations"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for (t, a) in ours.iter().enumerate() {
        assert!((a - acts[t * shape[1] + 1000] as f64).abs() < 1e-6);
    }
    let v = json_of(&scalpel(&[
        "neurons",
        "-m",
        &smol(),
        "-p",
        prompt,
        "--layer",
        "10",
        "--top",
        "3",
        "--json",
        "-q",
    ]));
    let first = &v["top"][0];
    let best = first[0]["neuron"].as_u64().unwrap() as usize;
    let row = &acts[..shape[1]];
    assert_eq!(best, scalpel::interp::top_k(row, 1)[0]);
}

/// A PNG that decodes, has the expected size range, and is not blank: several colours, and ink
/// (dark pixels) where text goes.
fn check_png(path: &Path, min_w: u32, min_h: u32) {
    let f = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(f)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        info.width >= min_w && info.height >= min_h,
        "{}: {}×{}",
        path.display(),
        info.width,
        info.height
    );
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let mut colours: Vec<&[u8]> = px.clone();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 50, "{}: only {} colours", path.display(), colours.len());
    let dark = px.iter().filter(|p| p.iter().all(|&c| c < 60)).count();
    assert!(dark > 500, "{}: no text ink ({dark} dark pixels)", path.display());
}

#[test]
fn pictures_are_written_and_carry_ink() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let prompt = "the apple is green. what color is the apple?";
    for (args, file, w, h) in [
        (vec!["lens", "-p", "中国的首都是", "--png", &p("lens.png")], "lens.png", 300, 500),
        (
            vec!["attention", "-p", prompt, "--layer", "22", "--head", "7", "--png", &p("head.png")],
            "head.png",
            300,
            300,
        ),
        (vec!["attention", "-p", prompt, "--layer", "22", "--png", &p("grid.png")], "grid.png", 600, 600),
        (
            vec![
                "similarity",
                "--a",
                "I ate an apple",
                "--a-token",
                "apple",
                "--b",
                "Apple makes phones",
                "--b-token",
                "Apple",
                "--png",
                &p("sim.png"),
            ],
            "sim.png",
            600,
            300,
        ),
    ] {
        let mut full = vec!["-q".to_string(), "-m".into(), smol()];
        full.splice(0..0, [args[0].to_string()]);
        full.extend(args[1..].iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let o = scalpel(&refs);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        check_png(&dir.path().join(file), w, h);
    }
    std::fs::write(dir.path().join("prompts.txt"), "I ate a crisp apple\nShe peeled a banana\nApple launched a phone\nGoogle released a product\nThe dog barked\n").unwrap();
    let o = scalpel(&[
        "pca",
        "-m",
        &smol(),
        "--prompts",
        &p("prompts.txt"),
        "--layer",
        "15",
        "--png",
        &p("pca.png"),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_png(&dir.path().join("pca.png"), 600, 400);
    // Group labels colour the points and come back in the text and JSON.
    std::fs::write(
        dir.path().join("grouped.txt"),
        "[fruit] I ate a crisp apple\n[fruit] She peeled a banana\n[company] Apple launched a phone\n[company] Google released a product\n[] [sic] The dog barked\n",
    )
    .unwrap();
    let args = ["pca", "-m", &smol(), "--prompts", &p("grouped.txt"), "--layer", "-15", "-q"];
    let o = scalpel(&[&args[..], &["--json", "--png", &p("grouped.png")]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let groups: Vec<&str> =
        v["points"].as_array().unwrap().iter().map(|p| p["group"].as_str().unwrap()).collect();
    assert_eq!(groups, ["fruit", "fruit", "company", "company", ""]);
    assert_eq!(v["points"][4]["prompt"], "[sic] The dog barked", "`[] ` keeps a leading bracket");
    assert_eq!(v["layer"], 15, "-15 counts from the end of 30 layers");
    check_png(&dir.path().join("grouped.png"), 600, 400);
    let o = scalpel(&args);
    assert!(stdout(&o).contains("company  Apple launched a phone"), "{}", stdout(&o));
    std::fs::write(dir.path().join("empty.txt"), "[fruit]\na\nb\nc\n").unwrap();
    let o = scalpel(&["pca", "-m", &smol(), "--prompts", &p("empty.txt"), "--layer", "3", "-q"]);
    assert_clean_failure(&o, "invalid", "group [fruit] has no prompt");
    // No overwriting without --force.
    let o = scalpel(&[
        "pca",
        "-m",
        &smol(),
        "--prompts",
        &p("prompts.txt"),
        "--layer",
        "15",
        "--png",
        &p("pca.png"),
        "-q",
    ]);
    assert_clean_failure(&o, "invalid", "--force");
}

/// Runs headless Chromium on a page; returns (DOM after scripts ran, console lines).
fn chromium(url: &str) -> (String, Vec<String>) {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("headless Chromium is needed for the report test: scripts/setup.sh --test installs it");
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&o.stdout).into_owned(), console)
}

#[test]
fn report_loads_in_headless_chromium_without_console_errors() {
    // The check can fail: a page with an error is caught.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.html");
    std::fs::write(&bad, "<html><body><script>undefinedFunction();</script></body></html>").unwrap();
    let (_, console) = chromium(&format!("file://{}", bad.display()));
    assert!(console.iter().any(|l| l.contains("Uncaught")), "the console check must see errors: {console:?}");

    let out = dir.path().join("report.html");
    let o = scalpel(&[
        "report",
        "-m",
        &smol(),
        "-p",
        "the apple is green. what color is the apple?",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "the page must not need the network");
    let (dom, console) = chromium(&format!("file://{}#layer=22&head=7&q=9", out.display()));
    assert!(console.is_empty(), "console output: {console:?}");
    assert!(dom.contains("data-ready=\"1\""), "the script ran to the end");
    for t in ["·apple", "·green", "·color", "?"] {
        assert!(dom.contains(&format!(">{t}<")), "token {t} shown");
    }
    // The preselected hover: position 9 (the second apple) in layer 22, head 7.
    assert!(
        dom.contains("layer 22, head 7: position 9 \" apple\""),
        "{}",
        &dom[dom.find("attn-info").unwrap_or(0)..][..300]
    );
    assert_eq!(dom.matches("<tr>").count(), 31, "30 lens rows and the token row");
    assert!(dom.contains("data-shown=\"22/7/9\""), "the map shows the linked view");
    assert!(dom.contains("href=\"#layer=22&amp;head=7&amp;q=9\""), "the page links to its view");

    // Without a link the page opens on the sharpest head and the last position, with legends.
    let (dom, console) = chromium(&format!("file://{}", out.display()));
    assert!(console.is_empty(), "console output: {console:?}");
    let shown = page.split("\"shown\":").nth(1).expect("the payload names the head shown at load");
    let num = |key: &str| -> usize {
        let v = shown.split(&format!("\"{key}\":")).nth(1).unwrap();
        v[..v.find(|c: char| !c.is_ascii_digit()).unwrap()].parse().unwrap()
    };
    let (layer, head) = (num("layer"), num("head"));
    assert!(
        dom.contains(&format!("data-shown=\"{layer}/{head}/10\"")),
        "the map shows layer {layer} head {head} at the last position at load"
    );
    assert!(dom.contains(&format!("layer {layer}, head {head}: position 10 \"?\"")));
    assert!(dom.contains("Open at load: layer"), "the page says why this head");
    assert_eq!(dom.matches("class=\"legend\"").count(), 2, "a colour legend for attention and the lens");
    assert!(dom.contains(">0.25<"), "legend ticks are labelled");
}

/// The head the report opens on is the one that looks most sharply at one earlier non-first token:
/// a previous-token head beats a sink head and a head that looks at itself.
#[test]
fn focused_heads_rank_previous_token_heads_over_sinks_and_self() {
    use scalpel::interp::attention::focused;
    let t = 5;
    let mut data = vec![0f32; 3 * t * t];
    for q in 0..t {
        data[q * t] = 1.0; // head 0: all on the first token
        data[t * t + q * t + q] = 1.0; // head 1: on itself
        data[2 * t * t + q * t + q.saturating_sub(1)] = 0.9; // head 2: on the previous token
        data[2 * t * t + q * t + q] += 0.1;
    }
    let map = scalpel::probe::Captured { start: 0, shape: vec![3, t, t], data };
    let ranked = focused(&std::collections::BTreeMap::from([(4, map)]));
    assert_eq!((ranked[0].layer, ranked[0].head), (4, 2), "{ranked:?}");
    assert!((ranked[0].score - 0.9).abs() < 1e-6);
    assert_eq!(ranked[1].score, 0.0, "sinks and self-attention score nothing: {ranked:?}");
}

/// llama.cpp applies `direction.N` to the output of block N: scalpel adds it to
/// blocks.N.resid_post, so blocks.{N-1}.resid_post is untouched and blocks.N.resid_post moves by
/// exactly scale × direction at every position.
#[test]
fn control_vector_layer_index_convention() {
    let dir = tempfile::tempdir().unwrap();
    let v = build_vector(dir.path(), &["--layers", "12"]);
    let cv = scalpel::interp::steer::ControlVector::read(Path::new(&v)).unwrap();
    let d = &cv.directions[&12];
    let trace = |name: &str, extra: &[&str]| -> Golden {
        let out = dir.path().join(name);
        let mut args = vec![
            "trace",
            "-m",
            "smollm2-135m",
            "-p",
            "Today I went to the market",
            "-o",
            out.to_str().unwrap(),
            "--points",
            "blocks.11.resid_post,blocks.12.resid_post",
            "-q",
        ];
        args.extend_from_slice(extra);
        let o = scalpel(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        Golden::open(&out)
    };
    let plain = trace("plain.st", &[]);
    let steered = trace("steered.st", &["--steer", &format!("{v}:2")]);
    assert_eq!(plain.f32("blocks.11.resid_post"), steered.f32("blocks.11.resid_post"));
    let (a, shape) = plain.f32("blocks.12.resid_post");
    let (b, _) = steered.f32("blocks.12.resid_post");
    for (r, (x, y)) in a.chunks(shape[1]).zip(b.chunks(shape[1])).enumerate() {
        for ((p, q), dv) in x.iter().zip(y).zip(d) {
            assert!((q - p - 2.0 * dv).abs() <= 1e-4 * (1.0 + p.abs()), "row {r}");
        }
    }
}

/// Activation patching's identities on both default models, exactly: the corrupted run with the
/// clean input's whole `resid_pre(0)` in place is the clean run (1); with nothing patched it is the
/// corrupted run (0).
#[test]
fn patching_identities_hold_exactly_on_both_default_models() {
    use scalpel::interp::patching::{Metric, Patcher, Site};
    use scalpel::probe::Point;
    for (alias, clean, corrupted) in [
        ("smollm2-135m", "The Eiffel Tower is in the city of", "The Colosseum is in the city of"),
        ("gemma3-270m", "The capital of France is the city of", "The capital of Italy is the city of"),
    ] {
        let files = open_known(alias);
        let model = Model::load(Cpu, &files).unwrap();
        let (a, b) = (files.tokenizer.encode(clean).unwrap(), files.tokenizer.encode(corrupted).unwrap());
        assert_eq!(a.len(), b.len(), "{alias}: the pair must tokenize to the same length");
        let paris = scalpel::interp::words::resolve_token(&files.tokenizer, "Paris", "answer").unwrap().0;
        let mut p = Patcher::new(&model, &a, &b, Metric::LogProb(paris), &[Site::ResidPre]).unwrap();
        assert!(p.clean > p.corrupted + 1.0, "{alias}: Paris is likelier after the clean prompt");
        let all: Vec<_> = (0..a.len()).map(|q| (q, p.clean_row(Point::ResidPre(0), q))).collect();
        let (whole, nothing) =
            (p.run(0, Point::ResidPre(0), &all).unwrap(), p.run(0, Point::ResidPre(0), &[]).unwrap());
        assert_eq!((p.normalize(whole), p.normalize(nothing)), (1.0, 0.0), "{alias}");
    }
}

/// `scalpel patch` on the default model finds the textbook picture: the subject's tokens carry the
/// answer in early layers, the last position in late ones; JSON has every cell, the PNG has ink.
#[test]
fn patch_command_moves_the_answer_from_the_subject_to_the_last_position() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("patch.png");
    let o = scalpel(&[
        "patch",
        "--clean",
        "The Eiffel Tower is in the city of",
        "--corrupted",
        "The Colosseum is in the city of",
        "--answer",
        "Paris",
        "--wrong",
        "Rome",
        "--sites",
        "resid_pre",
        "--json",
        "--png",
        png.to_str().unwrap(),
    ]);
    let v = json_of(&o);
    assert!(v["clean"].as_f64().unwrap() > v["corrupted"].as_f64().unwrap());
    let grid: Vec<Vec<f64>> = serde_json::from_value(v["sites"]["resid_pre"]["normalized"].clone()).unwrap();
    let t = v["clean_tokens"].as_array().unwrap().len();
    assert_eq!((grid.len(), grid[0].len()), (30, t));
    assert!(grid.iter().flatten().all(|x| x.is_finite()));
    // Position 0 ("The") is the same token in both prompts and restores nothing at any layer.
    assert!(grid.iter().all(|r| r[0] == 0.0));
    let subject = |l: usize| grid[l][1..4].iter().copied().fold(f64::MIN, f64::max);
    assert!(subject(2) > 0.5 && grid[2][t - 1].abs() < 0.2, "early: the subject {:?}", grid[2]);
    assert!(subject(29) < 0.2 && grid[29][t - 1] > 0.5, "late: the last position {:?}", grid[29]);
    check_png(&png, 400, 300);

    let bad = scalpel(&[
        "patch",
        "--clean",
        "The Eiffel Tower is in",
        "--corrupted",
        "Rome is in",
        "--answer",
        "Paris",
    ]);
    assert_clean_failure(&bad, "invalid", "same length");
    let bad = scalpel(&["patch", "--clean", "a b", "--corrupted", "a c", "--answer", "Parisxyzzy"]);
    assert_clean_failure(&bad, "invalid", "not one token");
    let bad = scalpel(&["patch", "--clean", "a b", "--corrupted", "a c", "--answer", "#99999999"]);
    assert_clean_failure(&bad, "invalid", "outside the vocabulary");
}

/// Direct logit attribution on both default models: the parts (embedding, each layer's attention
/// and MLP) sum to the final residual's projection, the heads of a layer to its attention, and the
/// projection is the model's own logit (difference) — to float error.
#[test]
fn direct_logit_attribution_sums_to_the_logit_on_both_default_models() {
    use scalpel::interp::attribution::attribute;
    for (alias, prompt) in
        [("smollm2-135m", "The Eiffel Tower is in the city of"), ("gemma3-270m", "The capital of France is")]
    {
        let files = open_known(alias);
        let model = Model::load(Cpu, &files).unwrap();
        let ids = files.tokenizer.encode(prompt).unwrap();
        let tok = |w: &str| scalpel::interp::words::resolve_token(&files.tokenizer, w, "token").unwrap().0;
        for (position, target, baseline) in [
            (ids.len() - 1, tok("Paris"), Some(tok("Rome"))),
            (ids.len() - 1, tok("Paris"), None),
            (2, tok("the"), None),
        ] {
            let a = attribute(&model, &ids, position, target, baseline).unwrap();
            let what = format!("{alias} position {position} target {target} baseline {baseline:?}");
            let scale = a.embed.abs() + a.layers.iter().map(|l| l.attn.abs() + l.mlp.abs()).sum::<f32>();
            assert!(
                (a.sum() - a.direct).abs() <= 1e-4 * scale + 1e-5,
                "{what}: parts {} vs {}",
                a.sum(),
                a.direct
            );
            for (l, s) in a.layers.iter().enumerate() {
                let heads: f32 = s.heads.iter().sum();
                let hs = s.heads.iter().map(|h| h.abs()).sum::<f32>();
                assert!(
                    (heads - s.attn).abs() <= 1e-4 * hs + 1e-5,
                    "{what} layer {l}: heads {heads} vs {}",
                    s.attn
                );
            }
            assert!(files.config.final_softcap.is_none(), "{alias}: compare before soft-capping");
            assert!(
                (a.direct - a.logit).abs() <= 1e-4 * a.logit.abs().max(1.0),
                "{what}: {} vs {}",
                a.direct,
                a.logit
            );
        }
    }
}

/// `scalpel attribute` prints the table, writes JSON and bars; on the mock device too.
#[test]
fn attribute_command_on_cpu_and_the_mock() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("dla.png");
    let base =
        ["attribute", "-p", "The Eiffel Tower is in the city of", "--answer", "Paris", "--wrong", "Rome"];
    let o = scalpel(&[&base[..], &["--png", png.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("logit(\" Paris\") − logit(\" Rome\")") && out.contains("heads with the largest"),
        "{out}"
    );
    check_png(&png, 400, 300);
    for device in ["cpu", "mock"] {
        let v = json_of(&scalpel(&[&base[..], &["--json", "--device", device]].concat()));
        let (direct, sum, logit) = (
            v["direct"].as_f64().unwrap(),
            v["sum_of_parts"].as_f64().unwrap(),
            v["logit"].as_f64().unwrap(),
        );
        assert_eq!(v["layers"].as_array().unwrap().len(), 30);
        assert!((direct - sum).abs() < 1e-3, "{device}: {direct} vs {sum}");
        // bf16 activations on the CUDA backend: the frozen-norm projection within a few hundredths.
        assert!((direct - logit).abs() < 0.05, "{device}: {direct} vs {logit}");
        assert!(logit > 1.0, "{device}: Paris over Rome after the Eiffel Tower ({logit})");
    }
    let bad = scalpel(&["attribute", "-p", "Hello", "--answer", "#-1"]);
    assert_clean_failure(&bad, "invalid", "token id");
}

/// Negative layer numbers count from the end wherever a layer is taken, as positions do.
#[test]
fn negative_layers_count_from_the_end() {
    let p = ["-p", "The capital of France is Paris", "--json", "-q"];
    for (cmd, flag) in [("neurons", "--layer"), ("attention", "--layer")] {
        let last = stdout(&scalpel(&[&[cmd, flag, "-1"][..], &p[..]].concat()));
        let named = stdout(&scalpel(&[&[cmd, flag, "29"][..], &p[..]].concat()));
        assert!(!last.is_empty() && last == named, "{cmd} {flag} -1 vs 29");
    }
    let bad = scalpel(&[&["neurons", "--layer", "-31"][..], &p[..]].concat());
    assert_clean_failure(&bad, "invalid", "layers 0..29");
}

/// A small corpus of template sentences with one planted document.
fn corpus(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, usize, &'static str) {
    let subj =
        ["The cat", "My neighbour", "A teacher", "The old man", "Our team", "The river", "A small bird"];
    let verb = ["walked to", "looked at", "talked about", "waited for", "painted", "visited", "cleaned"];
    let obj = ["the market", "a red door", "the garden", "an empty room", "the long road", "the blue sky"];
    let mut docs: Vec<String> = (0..30)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| format!("{} {} {}.", subj[(i + j) % 7], verb[(i * 3 + j) % 7], obj[(i * 5 + j) % 6]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let planted = "The violinist tuned her instrument before the concert in Vienna began.";
    docs.insert(17, planted.to_string());
    let (txt, jsonl) = (dir.join("corpus.txt"), dir.join("corpus.jsonl"));
    std::fs::write(&txt, docs.join("\n\n") + "\n").unwrap();
    let lines: Vec<String> = docs.iter().map(|d| serde_json::json!({ "text": d }).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    (txt, jsonl, 17, planted)
}

/// `top-examples` finds a planted context first when asked for its own direction, reads .txt and
/// .jsonl alike, scores a neuron as `neurons` does, and writes a self-contained page.
#[test]
fn top_examples_finds_the_planted_context() {
    use scalpel::interp::steer::ControlVector;
    let dir = tempfile::tempdir().unwrap();
    let (txt, jsonl, planted_doc, planted) = corpus(dir.path());
    let files = open_known("smollm2-135m");
    let model = Model::load(Cpu, &files).unwrap();
    let ids = files.tokenizer.encode(planted).unwrap();
    let strings = scalpel::interp::words::token_strings(&files.tokenizer, &ids).unwrap();
    let at = scalpel::interp::words::find_word(&strings, "Vienna")[0];
    let layer = 6;
    let cap = scalpel::interp::capture::capture(
        &model,
        &ids,
        [scalpel::probe::Point::ResidPost(layer), scalpel::probe::Point::MlpPost(layer)],
    )
    .unwrap();
    // A difference of two contexts (as `steer build` makes directions): what the residual holds in
    // common with every token — the huge components a raw residual projects on — cancels.
    let other = files.tokenizer.encode(&planted.replace("Vienna", "Berlin")).unwrap();
    assert_eq!(other.len(), ids.len());
    let base =
        scalpel::interp::capture::capture(&model, &other, [scalpel::probe::Point::ResidPost(layer)]).unwrap();
    let v: Vec<f32> = scalpel::interp::capture::row(&cap[&scalpel::probe::Point::ResidPost(layer)], at)
        .iter()
        .zip(scalpel::interp::capture::row(&base[&scalpel::probe::Point::ResidPost(layer)], at))
        .map(|(a, b)| a - b)
        .collect();
    let cv_path = dir.path().join("vienna.gguf");
    ControlVector { directions: [(layer, v)].into_iter().collect(), model_hint: String::new() }
        .write(&cv_path, false)
        .unwrap();
    let html = dir.path().join("top.html");
    let run = |corpus: &Path, extra: &[&str]| {
        json_of(&scalpel(
            &[&["top-examples", "--corpus", corpus.to_str().unwrap(), "--json", "--top", "3"][..], extra]
                .concat(),
        ))
    };
    let by_dir = run(&txt, &["--direction", cv_path.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    let first = &by_dir["examples"][0];
    assert_eq!(
        (first["document"].as_u64(), first["token"].as_str()),
        (Some(planted_doc as u64), Some(" Vienna")),
        "{by_dir}"
    );
    assert_eq!(first["position"].as_u64(), Some(at as u64));
    assert_eq!(by_dir["documents"].as_u64(), Some(31));
    assert_eq!(run(&jsonl, &["--direction", cv_path.to_str().unwrap()])["examples"], by_dir["examples"]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Vienna") && page.contains("<table") && !page.contains("<script"));

    // A neuron's score is its mlp_post value there, and the list is best first.
    let mlp = &cap[&scalpel::probe::Point::MlpPost(layer)];
    let f = mlp.shape[1];
    let neuron = (0..f).max_by(|&a, &b| mlp.data[at * f + a].total_cmp(&mlp.data[at * f + b])).unwrap();
    let by_neuron = run(&txt, &["--layer", "6", "--neuron", &neuron.to_string()]);
    let scores: Vec<f64> =
        by_neuron["examples"].as_array().unwrap().iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        scores[0] >= mlp.data[at * f + neuron] as f64 - 1e-5,
        "the planted token's activation is among the scores"
    );

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    assert_clean_failure(
        &scalpel(&["top-examples", "--corpus", empty.to_str().unwrap(), "--layer", "1", "--neuron", "1"]),
        "invalid",
        "no documents",
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"body\": 1}\n").unwrap();
    assert_clean_failure(
        &scalpel(&["top-examples", "--corpus", bad.to_str().unwrap(), "--layer", "1", "--neuron", "1"]),
        "format",
        "line 2",
    );
    assert_clean_failure(
        &scalpel(&["top-examples", "--corpus", txt.to_str().unwrap(), "--layer", "1"]),
        "invalid",
        "one of",
    );
}

/// Words mean their word-initial tokens: "king - man + woman" is " queen" on the default model (it
/// was a sub-word piece and junk before), special tokens stay out of the lists unless asked for,
/// and `#id` names a token.
#[test]
fn analogy_uses_word_initial_tokens_and_leaves_special_tokens_out() {
    let v = json_of(&scalpel(&["analogy", "king - man + woman", "--json", "-q"]));
    assert_eq!(v["analogy"]["neighbours"][0]["text"], " queen", "{v}");
    let terms = v["analogy"]["terms"].as_array().unwrap();
    let king = terms[0][2][0].as_u64().unwrap();
    let files = open_known("smollm2-135m");
    assert_eq!(files.tokenizer.decode(&[king as u32]).unwrap(), " king");
    let by_id =
        json_of(&scalpel(&["neighbors", "--token", &format!("#{king}"), "--json", "-q", "--top", "40"]));
    assert_eq!(by_id["ids"], serde_json::json!([king]));
    let specials = |v: &Value| {
        v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| files.tokenizer.is_special(n["id"].as_u64().unwrap() as u32))
            .count()
    };
    // "<|im_start|>"'s neighbours are the other control tokens, unless they are left out.
    let marker = json_of(&scalpel(&["neighbors", "--token", "#1", "--json", "-q", "--top", "20"]));
    assert_eq!(specials(&marker), 0, "{marker}");
    let with = json_of(&scalpel(&[
        "neighbors",
        "--token",
        "#1",
        "--json",
        "-q",
        "--top",
        "20",
        "--include-special",
    ]));
    assert!(specials(&with) > 0, "{with}");
}

/// README's lens example shows what README says on the default output: at 天气 the model passes
/// through English (" weather" on top at a middle layer) and answers 预 at the last; the table's
/// columns line up in terminal columns with CJK tokens in them.
#[test]
fn readme_lens_example_passes_through_english() {
    let args = ["lens", "-p", "天气预报说明天", "-m", "gemma3-270m", "--position", "1", "-q"];
    let v = json_of(&scalpel(&[&args[..], &["--json"]].concat()));
    let tops: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["positions"][1]["top"][0]["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(v["layers"][0]["positions"][1]["input"], "天气");
    let weather = tops.iter().position(|t| t == " weather").expect("a layer reads weather");
    assert!(weather > 0 && weather < tops.len() - 1, "{tops:?}");
    assert_eq!(tops.last().unwrap(), "预", "{tops:?}");
    let table = stdout(&scalpel(&args));
    let width = |l: &str| {
        l.chars().map(|c| if ('\u{3000}'..='\u{9fff}').contains(&c) { 2 } else { 1 }).sum::<usize>()
    };
    let probs: Vec<usize> = table
        .lines()
        .skip(1)
        .map(|l| width(&l[..l.find(" 0.").or_else(|| l.find(" 1.")).unwrap()]))
        .collect();
    assert!(
        probs.windows(2).all(|w| w[0] == w[1]),
        "the first probability column lines up: {probs:?}\n{table}"
    );
    assert!(!table.contains("\\u{"), "{table}");
}

/// `similarity --center` subtracts the contexts' mean and says so: the fruit and the company
/// separate far more clearly than in raw cosines, which every late layer keeps high.
#[test]
fn centred_similarity_separates_the_senses_and_says_it_is_centred() {
    let base = [
        "similarity",
        "--a",
        "I ate a red apple for lunch",
        "--a-token",
        "apple",
        "--b",
        "My favourite fruit is a crisp apple",
        "--b-token",
        "apple",
        "--b",
        "She works as an engineer at Apple in Cupertino",
        "--b-token",
        "Apple",
        "--json",
        "-q",
    ];
    let last = |v: &Value, i: usize| {
        v["comparisons"][i]["similarity"].as_array().unwrap().last().unwrap()["cosine"].as_f64().unwrap()
    };
    let raw = json_of(&scalpel(&base));
    let centred = json_of(&scalpel(&[&base[..], &["--center"]].concat()));
    assert_eq!((raw["centred"].as_bool(), centred["centred"].as_bool()), (Some(false), Some(true)));
    assert!(centred["shown"].as_str().unwrap().starts_with("centred"));
    let (raw_gap, centred_gap) = (last(&raw, 0) - last(&raw, 1), last(&centred, 0) - last(&centred, 1));
    assert!(centred_gap > raw_gap && centred_gap > 0.3, "raw gap {raw_gap}, centred gap {centred_gap}");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.txt");
    std::fs::write(&reference, "The weather was fine.\nWe walked to the station.\n\nShe read a long book.\n")
        .unwrap();
    let on = json_of(&scalpel(&[&base[..], &["--center-on", reference.to_str().unwrap()]].concat()));
    assert!(on["shown"].as_str().unwrap().contains("ref.txt"));
    std::fs::write(&reference, "\n").unwrap();
    assert_clean_failure(
        &scalpel(&[&base[..], &["--center-on", reference.to_str().unwrap()]].concat()),
        "invalid",
        "no texts",
    );
}

/// The attention text view does not stop at the sink: where a query's strongest key is the first
/// token, the strongest other key is shown beside it.
#[test]
fn messages_quote_text_without_rust_escapes() {
    // A zero-width joiner is printable text to a person; Rust's {:?} would write \u{200d}.
    let o = scalpel(&["attribute", "-p", "The capital of France is", "--answer", "Pa\u{200d}ris", "-q"]);
    assert_clean_failure(&o, "invalid", "\"Pa\u{200d}ris\" is not one token");
    assert!(!stderr(&o).contains("\\u{"), "{}", stderr(&o));
}

#[test]
fn attention_text_view_looks_past_the_sink() {
    let out = stdout(&scalpel(&[
        "attention",
        "-p",
        "the apple is green. what color is the apple?",
        "--layer",
        "5",
        "--head",
        "2",
        "-q",
    ]));
    let sunk: Vec<&str> = out.lines().filter(|l| l.contains("→   0 ")).skip(1).collect();
    assert!(!sunk.is_empty(), "{out}");
    assert!(sunk.iter().all(|l| l.contains("beside the sink:")), "{out}");
    assert!(!out.contains("\\u{"));
}
