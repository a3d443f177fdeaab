//! Writes the CRD YAML files that `kubectl apply` and the Helm chart use.
//!
//! `make crds` rewrites `crds/*.yaml`; `--check` exits non-zero when
//! the committed files differ from what the types generate (the drift test runs the same code).

use std::path::PathBuf;

use clap::Parser;

/// Generate edgewatt's CustomResourceDefinitions.
#[derive(Parser)]
struct Args {
    /// Directory to write into (default: the crds/ directory of this crate).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compare instead of writing; exit 1 on any difference.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args
        .out
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut stale = Vec::new();
    for (file, yaml) in edgewatt_crds::generated_yaml()? {
        let path = dir.join(file);
        if args.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        anyhow::bail!("out of date (run `make crds`): {}", stale.join(", "));
    }
    Ok(())
}
