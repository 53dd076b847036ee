//! `scalpel params`: every parameter's name, shape and dtype as the file stores it, and the total.

use clap::Args;
use serde_json::json;

use super::common::ModelArgs;

#[derive(Args, Debug)]
pub struct ParamsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Instead of the tensor list, compare the architecture of --model with this model side by
    /// side (vocabulary, hidden size, layers, heads, KV heads, head dim, FFN size, parameters).
    #[arg(long, value_name = "MODEL")]
    pub compare: Option<String>,
}

/// The architecture rows of a side-by-side comparison.
fn summary(files: &crate::model::ModelFiles) -> Vec<(&'static str, String)> {
    let c = &files.config;
    let total: usize = files.weights.params().iter().map(|p| p.numel()).sum();
    let windows: Vec<String> = c.layers.iter().filter_map(|l| l.window).map(|w| w.to_string()).collect();
    let attention = if windows.is_empty() {
        "global".to_string()
    } else {
        format!("{} global, {} sliding ({})", c.layers.len() - windows.len(), windows.len(), windows[0])
    };
    vec![
        ("architecture", c.arch.name().to_string()),
        ("vocab size", c.vocab_size.to_string()),
        ("hidden size", c.hidden_size.to_string()),
        ("layers", c.n_layers.to_string()),
        ("heads", c.n_heads.to_string()),
        ("KV heads", c.n_kv_heads.to_string()),
        ("head dim", c.head_dim.to_string()),
        ("FFN size", c.intermediate_size.to_string()),
        ("context", c.context_length.to_string()),
        ("attention", attention),
        ("tied embeddings", c.tie_embeddings.to_string()),
        ("parameters", format!("{total} ({})", human(total))),
    ]
}

fn compare(a: &crate::model::ModelFiles, b: &crate::model::ModelFiles, json: bool) {
    let (ra, rb) = (summary(a), summary(b));
    if json {
        let obj = |r: &[(&str, String)]| -> serde_json::Map<String, serde_json::Value> {
            r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
        };
        println!("{}", json!({ a.label.clone(): obj(&ra), b.label.clone(): obj(&rb) }));
        return;
    }
    let wa = ra.iter().map(|(_, v)| v.len()).max().unwrap_or(0).max(a.label.len());
    println!("{:<16} {:<wa$}  {}", "", a.label, b.label);
    for ((k, va), (_, vb)) in ra.iter().zip(&rb) {
        println!("{k:<16} {va:<wa$}  {vb}");
    }
}

/// 135_000_000 → "135.0M".
pub fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn run(args: ParamsArgs) -> anyhow::Result<()> {
    let files = args.model.open()?;
    if let Some(other) = &args.compare {
        let other = ModelArgs { model: Some(other.clone()), ..args.model.clone() }.open()?;
        compare(&files, &other, args.json);
        return Ok(());
    }
    let params = files.weights.params();
    let total: usize = params.iter().map(|p| p.numel()).sum();
    if args.json {
        println!(
            "{}",
            json!({ "model": files.label, "format": files.weights.format_name(), "config": files.config, "params": params, "total": total })
        );
        return Ok(());
    }
    let width = params.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<18} {:<6} {:>12}", "name", "shape (rows first)", "dtype", "count");
    for p in &params {
        let shape = format!("{:?}", p.shape);
        println!("{:<width$}  {:<18} {:<6} {:>12}", p.name, shape, p.dtype, p.numel());
    }
    println!("{} tensors, {} parameters ({})", params.len(), total, human(total));
    Ok(())
}
