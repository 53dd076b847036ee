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
