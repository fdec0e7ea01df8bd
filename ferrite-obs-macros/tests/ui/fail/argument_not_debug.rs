struct Opaque;

#[ferrite_obs::probe]
fn takes(opaque: Opaque) {
    let _ = opaque;
}

fn main() {}
