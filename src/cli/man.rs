//! `vdmount man` (hidden): prints the man page, man/vdmount.1. Its synopsis and options are
//! generated from the clap definitions by clap_mangen, so they say what `--help` says; the
//! prose sections are roff kept beside the page in man/sections/. tests/cli.rs fails when
//! man/vdmount.1 is not what this prints. To regenerate it:
//!
//! ```text
//! cargo run --release -- man > man/vdmount.1
//! ```

use super::{Cli, ImageArgs};
use clap::{Arg, Args, Command, CommandFactory};
use clap_mangen::Man;

const DESCRIPTION: &str = include_str!("../../man/sections/description.roff");
const COMMANDS: &str = include_str!("../../man/sections/commands.roff");
const EXIT_STATUS: &str = include_str!("../../man/sections/exit-status.roff");
const EXAMPLES: &str = include_str!("../../man/sections/examples.roff");
const FILES: &str = include_str!("../../man/sections/files.roff");
const SECURITY: &str = include_str!("../../man/sections/security.roff");
const SEE_ALSO: &str = include_str!("../../man/sections/see-also.roff");
/// The page's date (in its footer): when its content last changed in substance.
const DATE: &str = "December 2026";

/// The whole page, in roff.
pub fn render() -> String {
    let mut cli = Cli::command();
    cli.build();
    let image_ids: Vec<_> =
        ImageArgs::augment_args(Command::new("image")).get_arguments().map(|a| a.get_id().clone()).collect();
    let is_image = |a: &Arg| image_ids.contains(a.get_id());
    let is_help = |a: &Arg| matches!(a.get_id().as_str(), "help" | "version");
    let subcommands: Vec<&Command> =
        cli.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help").collect();

    let man = Man::new(cli.clone()).title("VDMOUNT").date(DATE).manual("User Commands");
    // Only the first fragment keeps the preamble roff writes at the top of each.
    let mut page = roff(|w| man.render_title(w));
    page += &without_preamble(roff(|w| man.render_name_section(w)));

    // One synopsis line per command; serving's is drawn without the subcommands.
    page += ".SH SYNOPSIS\n";
    page += &synopsis("vdmount", cli.get_arguments().filter(|a| !is_help(a)));
    for sub in &subcommands {
        page += ".br\n";
        page += &synopsis(&format!("vdmount {}", sub.get_name()), sub.get_arguments().filter(|a| !is_help(a)));
    }

    page += DESCRIPTION;
    page += COMMANDS;
    page += ".SH IMAGE OPTIONS\nTaken by serving, \\fBcat\\fR, \\fBinfo\\fR and \\fBverify\\fR.\n";
    page += &options(cli.get_arguments().filter(|a| is_image(a)));
    page += ".SH SERVING OPTIONS\n";
    page += &options(cli.get_arguments().filter(|a| !is_image(a) && !is_help(a)));
    page += ".SH OTHER OPTIONS\n";
    page += &options(cli.get_arguments().filter(|a| is_help(a)));
    for sub in &subcommands {
        let own: Vec<&Arg> = sub.get_arguments().filter(|a| !is_image(a) && !is_help(a) && !a.is_hide_set()).collect();
        if !own.is_empty() {
            page += &format!(".SS \"vdmount {}\"\n", sub.get_name());
            page += &options(own.into_iter());
        }
    }
    for prose in [EXIT_STATUS, EXAMPLES, FILES, SECURITY, SEE_ALSO] {
        page += prose;
    }
    page
}

/// What one of clap_mangen's render_* functions writes.
fn roff(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    render(&mut out).expect("writing to a Vec");
    String::from_utf8(out).expect("clap_mangen writes UTF-8")
}

/// A command of these arguments, as clap_mangen is given it.
fn command<'a>(name: &str, args: impl Iterator<Item = &'a Arg>) -> Command {
    Command::new("vdmount").bin_name(name).disable_help_flag(true).disable_version_flag(true).args(args.cloned())
}

/// The synopsis line of a command taking `args`, without clap_mangen's ".SH SYNOPSIS".
fn synopsis<'a>(name: &str, args: impl Iterator<Item = &'a Arg>) -> String {
    let man = Man::new(command(name, args));
    without_heading(roff(|w| man.render_synopsis_section(w)))
}

/// `args` as clap_mangen's OPTIONS section lists them, without its ".SH OPTIONS".
fn options<'a>(args: impl Iterator<Item = &'a Arg>) -> String {
    let man = Man::new(command("vdmount", args));
    without_heading(roff(|w| man.render_options_section(w)))
}

/// A section clap_mangen wrote, without the preamble and its ".SH" line.
fn without_heading(section: String) -> String {
    let body = without_preamble(section);
    body.strip_prefix(".SH ").and_then(|s| s.split_once('\n')).map_or(body.clone(), |(_, rest)| rest.to_string())
}

/// Without the lines the roff crate puts at the top of everything it writes (they define
/// \*(Aq, the apostrophe, which the title's copy defines for the whole page).
fn without_preamble(roff: String) -> String {
    roff.lines()
        .skip_while(|l| l.starts_with(".ie \\n(.g .ds Aq") || l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect()
}
