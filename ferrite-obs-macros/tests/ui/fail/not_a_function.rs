#[ferrite_obs::probe]
struct NotAFunction;

fn main() {}
