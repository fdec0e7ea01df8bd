#[ferrite_obs::probe]
const fn answer() -> u32 {
    42
}

fn main() {}
