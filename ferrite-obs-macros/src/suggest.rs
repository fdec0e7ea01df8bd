// "Did you mean ...?" for misspelt names: the nearest candidate by edit
// distance, an adjacent transposition counting as one edit.
//
// Used by this crate for `#[probe]` option names, and by `ferrite-obs` for
// configuration keys through `__suggest!()`, which expands to this file (a
// proc-macro crate cannot export functions). Hence plain comments: the
// expansion is a list of items, where inner attributes are not allowed.

/// The candidate closest to `given`, ignoring case, if it is close enough to
/// be a likely typo.
pub(crate) fn nearest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&given, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| {
            let prefix = c.starts_with(given.as_str()) || given.starts_with(*c);
            *d <= (c.len().max(given.len()) / 3).max(1) + usize::from(prefix)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}
