//! The compile errors of `#[probe]` are part of its interface: these cases pin
//! each message and the token it points at.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
