//! `armada-agent`: parses the command line and hands it to the library
//! (`armada_agent::cli`); everything else lives there (see its Layout list).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    armada_agent::cli::dispatch(armada_agent::cli::Cli::parse())
}
