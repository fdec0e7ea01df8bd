#[ferrite_obs::probe(nmae = "x")]
fn a() {}

#[ferrite_obs::probe(frobnicate)]
fn b() {}

fn main() {}
