#[ferrite_obs::probe(err, name = "a", err)]
fn a() -> Result<(), ()> {
    Ok(())
}

fn main() {}
