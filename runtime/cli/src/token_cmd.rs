//! `plexus token new NAME --role ROLE`: make an admin API token. The token is printed
//! once; the config keeps only its sha256.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The token's name (shown in the audit log as `token:NAME`).
    #[arg(value_name = "NAME")]
    name: String,
    /// viewer, operator, deployer, reviewer or admin.
    #[arg(long, value_name = "ROLE", value_parser = ["viewer", "operator", "deployer", "reviewer", "admin"])]
    role: String,
}

pub fn new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        plexus_config::Id::new(&args.name).is_some(),
        "`{}` is not a valid token name: lowercase letters, digits and '-', starting with a letter or digit",
        args.name
    );
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let digest = plexus_pipeline::sha256_hex(token.as_bytes());
    println!("token (shown once; give it to its holder, keep it out of the config):\n  {token}\n");
    println!("add it to the site config: append these lines to the end of the file");
    println!(
        "(or, if [admin] already has a `tokens = [...]` list, put the {{ ... }} entry in it):\n"
    );
    println!(
        "[[admin.tokens]]\nname = \"{}\"\nrole = \"{}\"\nsha256 = \"{digest}\"\n",
        args.name, args.role
    );
    println!(
        "  {{ name = \"{}\", role = \"{}\", sha256 = \"{digest}\" }},",
        args.name, args.role
    );
    println!("\nthen `plexus check` the site, and restart the engine or send it SIGHUP");
    Ok(ExitCode::SUCCESS)
}

/// Fills `buf` from the operating system's random source.
fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| anyhow::anyhow!("reading /dev/urandom: {e}"))
}
