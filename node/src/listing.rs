//! Listings that filter what they scan (visible namespaces, artifacts of a
//! kind, referrers of a type): walk the store's pages from a cursor and
//! keep up to `n` items that pass, noting whether more follow.

/// What a listing does with one scanned item.
pub enum Step<T> {
    Skip,
    Keep(T),
}

/// `scan(after)` returns the page after a cursor, in key order, and whether
/// more pages follow; `key` is an item's cursor; `step` decides each item.
/// Returns the items kept and whether another one passed after them.
pub fn filtered_page<I, T, E>(
    mut after: Option<String>,
    n: usize,
    mut scan: impl FnMut(Option<&str>) -> Result<(Vec<I>, bool), E>,
    key: impl Fn(&I) -> String,
    mut step: impl FnMut(I) -> Result<Step<T>, E>,
) -> Result<(Vec<T>, bool), E> {
    let mut items = Vec::new();
    loop {
        let (page, more_pages) = scan(after.as_deref())?;
        for item in page {
            after = Some(key(&item));
            match step(item)? {
                Step::Skip => {}
                Step::Keep(_) if items.len() == n => return Ok((items, true)),
                Step::Keep(t) => items.push(t),
            }
        }
        if !more_pages {
            return Ok((items, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The store: sorted keys served in pages of `page` after a cursor.
    fn pages(
        keys: &[u32],
        page: usize,
    ) -> impl FnMut(Option<&str>) -> Result<(Vec<u32>, bool), ()> + '_ {
        move |after| {
            let from = after.map_or(0, |a| {
                let a: u32 = a.parse().unwrap();
                keys.partition_point(|k| *k <= a)
            });
            let items: Vec<u32> = keys[from..].iter().take(page).copied().collect();
            Ok((items, from + page < keys.len()))
        }
    }

    proptest! {
        /// Paging through a filtered listing with the cursor it returns
        /// yields exactly the filtered keys, in order, each once, whatever
        /// the page sizes.
        #[test]
        fn pages_of_a_filtered_listing_add_up_to_the_filtered_keys(
            keys in proptest::collection::btree_set(0u32..500, 0..200),
            page in 1usize..50,
            n in 1usize..30,
            modulus in 1u32..5,
        ) {
            let keys: Vec<u32> = keys.into_iter().collect();
            let want: Vec<u32> = keys.iter().copied().filter(|k| k % modulus == 0).collect();
            let mut got: Vec<u32> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (items, more) = filtered_page(
                    cursor.clone(),
                    n,
                    pages(&keys, page),
                    |k| k.to_string(),
                    |k| Ok::<_, ()>(if k % modulus == 0 { Step::Keep(k) } else { Step::Skip }),
                )
                .unwrap();
                prop_assert!(items.len() <= n);
                got.extend(&items);
                if !more {
                    break;
                }
                prop_assert_eq!(items.len(), n);
                cursor = items.last().map(|k| k.to_string());
            }
            prop_assert_eq!(got, want);
        }
    }
}
