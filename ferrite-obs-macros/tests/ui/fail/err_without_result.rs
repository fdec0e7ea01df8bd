#[ferrite_obs::probe(err)]
fn count() -> u32 {
    1
}

#[ferrite_obs::probe(err)]
fn nothing() {}

fn main() {}
