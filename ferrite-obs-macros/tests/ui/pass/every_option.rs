use ferrite_obs::probe;

#[derive(Debug)]
struct Db(Vec<u8>);

impl Db {
    #[probe(name = "db_get", level = "trace", fields(len = self.0.len()), skip(self), err)]
    pub fn get(&self, index: usize) -> Result<u8, String> {
        self.0.get(index).copied().ok_or_else(|| format!("no index {index}"))
    }

    #[probe(command, name = "SET", level = tracing::Level::INFO)]
    pub async fn set(&mut self, value: u8) {
        self.0.push(value);
    }
}

#[probe(skip_all, level = 5)]
fn generic<T: Clone + Send, const N: usize>(items: [T; N]) -> impl Iterator<Item = T>
where
    T: 'static,
{
    items.into_iter()
}

#[probe(err)]
#[deny(unused_variables)]
fn question_mark(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.parse()?;
    if n == 0 {
        return Ok(1);
    }
    Ok(n)
}

#[probe(err)]
async fn async_question_mark(s: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let n: u32 = s.parse()?;
    Ok(n)
}

#[probe]
unsafe fn raw(p: *const u8) -> u8 {
    // SAFETY: callers pass a valid pointer.
    unsafe { *p }
}

fn main() {
    let db = Db(vec![1, 2]);
    assert_eq!(db.get(0), Ok(1));
    assert!(db.get(9).is_err());
    assert_eq!(generic([1, 2, 3]).count(), 3);
    assert_eq!(question_mark("7"), Ok(7));
    let _ = async_question_mark("1");
    let byte = 3u8;
    // SAFETY: `byte` is a valid u8.
    assert_eq!(unsafe { raw(&byte) }, 3);
}
