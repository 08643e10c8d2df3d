//! `eventlogs new NAME`: a reducer crate to start from, in a new folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

/// `eventlogs new NAME`.
#[derive(Args)]
pub struct NewArgs {
    /// The crate's name, and its folder's (letters, digits, `-` and `_`).
    name: String,
    /// Depend on the guest SDK in this folder (a checkout's `guest-sdk`)
    /// instead of on its released version.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
    /// Where to create the folder.
    #[arg(long, default_value = ".")]
    into: PathBuf,
}

/// The files of a new reducer crate, with `{{name}}`, `{{crate}}`, `{{sdk}}`
/// and `{{rust_version}}` filled in.
const FILES: [(&str, &str); 5] = [
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    (
        ".cargo/config.toml",
        include_str!("template/cargo-config.toml.tmpl"),
    ),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    (".gitignore", include_str!("template/gitignore.tmpl")),
];

/// Creates the crate and says what to run next.
pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("{name:?} is not a crate name: start with a letter; letters, digits, - and _");
    }
    let folder = args.into.join(name);
    if folder.exists() {
        bail!("{} exists already", folder.display());
    }
    let sdk = match &args.sdk_path {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("the SDK folder {}", path.display()))?;
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("{:?}", env!("CARGO_PKG_VERSION")),
    };
    for (file, template) in FILES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk)
            .replace("{{rust_version}}", env!("CARGO_PKG_RUST_VERSION"));
        write(&folder.join(file), &text)?;
    }
    println!("created {}: a reducer crate; next:", folder.display());
    println!("  cd {} && cargo test", folder.display());
    println!("  cargo build --release --target wasm32-wasip2");
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
