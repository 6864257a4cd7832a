//! Cursor pagination, the one way every list in the API pages.
//!
//! Lists are ordered newest first (`created_at DESC, id DESC`); the cursor is the opaque encoding
//! of the last row's `(created_at, id)`, so pages stay stable while new rows arrive. A store
//! fetches `limit + 1` rows after [`Page::after`] and [`Page::finish`] turns them into a [`List`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{Error, Result};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 200;

/// A page request, validated.
#[derive(Clone, Debug)]
pub struct Page {
    pub limit: i64,
    /// Rows strictly older than this `(created_at, id)` are returned. The first page starts
    /// after `(i64::MAX, "")`, which every row precedes.
    pub after: (i64, String),
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl Page {
    pub fn new(limit: Option<i64>, cursor: Option<&str>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match cursor {
            None | Some("") => (i64::MAX, String::new()),
            Some(cursor) => decode(cursor)
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor this API issued"))?,
        };
        Ok(Self { limit, after })
    }

    /// How many rows the store should fetch: one more than the page, to know whether another
    /// page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Turns `limit + 1` fetched rows into a page; `key` gives a row's `(created_at, id)`.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> (i64, &str)) -> List<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|row| encode(key(row))))
            .flatten();
        List {
            data: rows,
            next_cursor,
        }
    }
}

fn encode((created_at, id): (i64, &str)) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

fn decode(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (created_at, id) = raw.split_once('.')?;
    Some((created_at.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends as a cursor, the answer is a page or a 422, never a panic;
        /// and every cursor this API issues reads back as the row it names.
        #[test]
        fn any_cursor_is_read_or_refused_and_ours_round_trip(
            garbage in ".{0,80}",
            created_at in any::<i64>(),
            id in "[a-z]{3}_[0-9A-Z]{26}",
        ) {
            let _ = Page::new(Some(10), Some(&garbage));
            let cursor = encode((created_at, &id));
            prop_assert_eq!(decode(&cursor), Some((created_at, id)));
        }
    }

    #[test]
    fn limits_outside_1_to_200_are_refused() {
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(Some(201), None).is_err());
        assert_eq!(Page::new(None, None).unwrap().limit, 100);
        assert_eq!(Page::new(Some(200), None).unwrap().limit, 200);
    }

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let page = Page::new(Some(2), None).unwrap();
        let rows = vec![
            (30, "c".to_owned()),
            (20, "b".to_owned()),
            (10, "a".to_owned()),
        ];
        let list = page.finish(rows, |r| (r.0, &r.1));
        assert_eq!(list.data.len(), 2);
        let next = Page::new(Some(2), list.next_cursor.as_deref()).unwrap();
        assert_eq!(next.after, (20, "b".to_owned()));
        assert!(Page::new(None, Some("not-a-cursor")).is_err());
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = Page::new(Some(5), None).unwrap();
        let list = page.finish(vec![(1, "a".to_owned())], |r| (r.0, &r.1));
        assert!(list.next_cursor.is_none());
    }
}
