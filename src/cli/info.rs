//! `vdmount info IMAGE`: what the image is, layer by layer down its backing chain.

use super::{human, ImageArgs};
use crate::error::{Error, Result};
use crate::formats::ImageInfo;

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON (the same facts, the backing chain nested under "backing").
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    // Every layer is shown, a backing layer that cannot be opened with why; the command then
    // fails with that reason, so scripts still learn the chain does not open.
    let mut opts = args.image.options();
    opts.describe_failed_layers = true;
    let info = crate::formats::open(&args.image.image, &opts)?.info();
    if args.json {
        let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", render(&info));
    }
    let mut layer = Some(&info);
    while let Some(i) = layer {
        if let Some(why) = &i.error {
            return Err(Error::Image(why.clone()));
        }
        layer = i.backing.as_deref();
    }
    Ok(())
}

pub fn render(info: &ImageInfo) -> String {
    let mut out = String::new();
    let mut layer = Some(info);
    let mut depth = 0;
    while let Some(i) = layer {
        let indent = "  ".repeat(depth);
        if depth > 0 {
            out += &format!("{indent}backing file:\n");
        }
        let indent = "  ".repeat(depth + usize::from(depth > 0));
        out += &format!("{indent}image: {}\n", i.path.display());
        out += &format!("{indent}format: {}\n", i.format);
        if let Some(why) = &i.error {
            out += &format!("{indent}not opened: {why}\n");
            break;
        }
        out += &format!("{indent}virtual size: {} ({} bytes)\n", human(i.virtual_size), i.virtual_size);
        if let Some(c) = i.cluster_size {
            out += &format!("{indent}cluster size: {c}\n");
        }
        out += &format!("{indent}logical sector size: {}\n", i.logical_sector_size);
        let features = if i.features.is_empty() { "none".to_string() } else { i.features.join(", ") };
        out += &format!("{indent}features: {features}\n");
        for (k, v) in &i.details {
            out += &format!("{indent}{k}: {v}\n");
        }
        layer = i.backing.as_deref();
        depth += 1;
    }
    out
}
