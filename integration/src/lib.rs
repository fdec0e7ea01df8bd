//! The instrumented host programs and end-to-end tests of ferrite-obs.
