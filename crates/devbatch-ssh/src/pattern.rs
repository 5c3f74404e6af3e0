//! OpenSSH host patterns: `*` and `?` wildcards, comma lists and `!` negation, as used by
//! `known_hosts` host fields and `Host` lines of `ssh_config`.

/// Whether `name` matches one wildcard pattern (`*` any run, `?` one character), ASCII
/// case-insensitively.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    // Iterative matcher with one backtracking point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// How a pattern list judged a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// No pattern matched.
    None,
    /// A positive pattern matched and no negated one did.
    Positive,
    /// A negated pattern (`!pat`) matched: the list excludes the name whatever else matches.
    Negated,
}

/// Judges `name` against patterns (already split), the way OpenSSH's `match_pattern_list`
/// does: a matching negated pattern wins over any positive one.
pub(crate) fn match_list<'a>(patterns: impl IntoIterator<Item = &'a str>, name: &str) -> ListMatch {
    let mut result = ListMatch::None;
    for pattern in patterns {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, name) {
                return ListMatch::Negated;
            }
        } else if wildcard_match(pattern, name) {
            result = ListMatch::Positive;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.example.org", "a.b.example.org"));
        assert!(!wildcard_match("*.example.org", "example.org"));
        assert!(wildcard_match("host-?", "HOST-7"));
        assert!(!wildcard_match("host-?", "host-17"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("[127.0.0.1]:*", "[127.0.0.1]:2222"));
    }

    #[test]
    fn negation_wins() {
        assert_eq!(
            match_list("*.lab,!secret.lab".split(','), "secret.lab"),
            ListMatch::Negated
        );
        assert_eq!(
            match_list("*.lab,!secret.lab".split(','), "open.lab"),
            ListMatch::Positive
        );
        assert_eq!(
            match_list("!secret.lab".split(','), "open.lab"),
            ListMatch::None
        );
    }
}
