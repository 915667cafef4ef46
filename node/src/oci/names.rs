//! The distribution spec's grammar for repository names and tags, plus
//! tcr's rule that a repository lives inside a namespace (`<ns>/<repo>`).

/// Longest repository name accepted (Distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_NAMESPACE_LEN: usize = 64;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Why a repository name is refused, in words for the error message.
pub fn check_repository(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let mut parts = name.split('/');
    let ns = parts.next().unwrap_or("");
    check_namespace(ns)?;
    let mut count = 0;
    for part in parts {
        count += 1;
        if !is_component(part) {
            return Err(format!(
                "repository name component '{}' is invalid: lowercase letters and digits, separated by '.', '_', '__' or '-'",
                truncate(part)
            ));
        }
    }
    if count == 0 {
        return Err(format!(
            "repository '{}' must be inside a namespace: <namespace>/<repository>",
            truncate(name)
        ));
    }
    Ok(())
}

pub fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.len() > MAX_NAMESPACE_LEN {
        return Err(format!(
            "namespace name is {} characters long; the limit is {MAX_NAMESPACE_LEN}",
            ns.len()
        ));
    }
    if !is_component(ns) {
        return Err(format!(
            "namespace name '{}' is invalid: lowercase letters and digits, separated by '.', '_', '__' or '-'",
            truncate(ns)
        ));
    }
    Ok(())
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(check_repository("acme/app").is_ok());
        assert!(check_repository("acme/team/app-1.2_x__y").is_ok());
        assert!(check_repository("acme").is_err());
        assert!(check_repository("Acme/app").is_err());
        assert!(check_repository("acme/app/").is_err());
        assert!(check_repository("acme//app").is_err());
        assert!(check_repository("acme/a...b").is_err());
        assert!(check_repository("acme/a___b").is_err());
        assert!(check_repository("acme/-a").is_err());
        assert!(is_tag("latest") && is_tag("_v1.0-rc") && !is_tag(".x") && !is_tag(""));
        assert!(!is_tag(&"a".repeat(129)) && is_tag(&"a".repeat(128)));
    }

    proptest! {
        #[test]
        fn generated_components_are_valid(c in "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,4}") {
            prop_assert!(is_component(&c));
        }

        #[test]
        fn uppercase_or_slash_never_valid_component(c in "[a-z]{0,4}[A-Z/:@][a-z]{0,4}") {
            prop_assert!(!is_component(&c));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,300}") {
            let _ = check_repository(&s);
            let _ = is_tag(&s);
        }
    }
}
