#[ferrite_obs::probe(level = "verbose", name = "")]
fn a() {}

#[ferrite_obs::probe(skip(value, missing))]
fn b(value: u32) -> u32 {
    value
}

#[ferrite_obs::probe(skip(value), skip_all)]
fn c(value: u32) -> u32 {
    value
}

fn main() {}
