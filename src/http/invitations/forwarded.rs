//! The client address a trusted proxy reports in `X-Forwarded-For`.
//!
//! A client may send its own `X-Forwarded-For`; the proxy appends the address it saw to that
//! list (or adds a line of its own). Only that last entry is the proxy's word: every earlier
//! one may have been written by the client, so none of them is ever used in its place.

use axum::http::HeaderMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The address in the last entry of the last `X-Forwarded-For` line (all lines read as one
/// comma-separated list), or None when there is no such header or that entry is not an
/// address: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`. IPv4-mapped IPv6 addresses come back
/// as their IPv4 address.
pub fn proxy_added_address(headers: &HeaderMap) -> Option<IpAddr> {
    parse_entry(proxy_added_entry(headers, "x-forwarded-for")?).map(|ip| ip.to_canonical())
}

/// The last entry (trimmed) of the last line of a comma-separated forwarding header such as
/// `X-Forwarded-For`, `-Host` or `-Proto`: the one the proxy in front added. None without the
/// header, or when that line is not text or that entry is empty.
pub fn proxy_added_entry<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let last_line = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    Some(last_line.rsplit(',').next()?.trim()).filter(|entry| !entry.is_empty())
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn takes_the_last_entry_in_every_form_a_proxy_writes() {
        for (lines, expected) in [
            (&["203.0.113.9"][..], "203.0.113.9"),
            (&["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
            (&["198.51.100.1,203.0.113.9:4711"], "203.0.113.9"),
            (&["198.51.100.1, 2001:db8::1"], "2001:db8::1"),
            (&["198.51.100.1, [2001:db8::1]"], "2001:db8::1"),
            (&["198.51.100.1, [2001:db8::1]:443"], "2001:db8::1"),
            (&["198.51.100.1 ,\t203.0.113.9 "], "203.0.113.9"),
            (&["198.51.100.1", "203.0.113.10"], "203.0.113.10"),
            (&["::ffff:203.0.113.11"], "203.0.113.11"),
            (&["[::ffff:203.0.113.11]:80"], "203.0.113.11"),
        ] {
            assert_eq!(
                proxy_added_address(&headers(lines)),
                ip(expected),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn an_unreadable_last_entry_never_falls_back_to_an_earlier_one() {
        for lines in [
            &["198.51.100.1, unknown"][..],
            &["198.51.100.1, _hidden"],
            &["198.51.100.1,"],
            &["198.51.100.1, "],
            &["198.51.100.1, 203.0.113.9:http"],
            &["198.51.100.1, 203.0.113.9:70000"],
            &["198.51.100.1, [203.0.113.9]"],
            &["198.51.100.1, [2001:db8::1"],
            &["198.51.100.1, fe80::1%eth0"],
            &["198.51.100.1", "unknown"],
            &["198.51.100.1", ""],
        ] {
            assert_eq!(proxy_added_address(&headers(lines)), None, "{lines:?}");
        }
        assert_eq!(proxy_added_address(&HeaderMap::new()), None);
    }

    #[test]
    fn a_last_line_that_is_not_text_is_not_skipped() {
        let mut map = headers(&["198.51.100.1"]);
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(proxy_added_address(&map), None);
    }

    /// An entry a client could write: no comma, only characters a header value may hold.
    fn any_entry() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<IpAddr>().prop_map(|ip| ip.to_string()),
            "[ -+\\--~]{0,16}",
        ]
    }

    /// `ip` in one of the forms a proxy may write it.
    fn written(ip: IpAddr, form: u8, port: u16) -> String {
        match (ip, form % 4) {
            (_, 0) => ip.to_string(),
            (IpAddr::V6(v6), 1) => format!("[{v6}]"),
            (_, _) => SocketAddr::new(ip, port).to_string(),
        }
    }

    proptest! {
        #[test]
        fn the_proxy_added_entry_wins_over_anything_before_it(
            earlier in proptest::collection::vec(any_entry(), 0..6),
            ip in any::<IpAddr>(),
            form in any::<u8>(),
            port in any::<u16>(),
            split in any::<prop::sample::Index>(),
        ) {
            let mut entries = earlier;
            entries.push(written(ip, form, port));
            // However the list is spread over header lines, the result is the same.
            let at = split.index(entries.len());
            let lines: Vec<String> = [&entries[..at], &entries[at..]]
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| part.join(", "))
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            prop_assert_eq!(proxy_added_address(&headers(&lines)), Some(ip.to_canonical()));
        }

        #[test]
        fn an_entry_that_is_no_address_gives_none_whatever_came_before(
            earlier in proptest::collection::vec(any::<IpAddr>(), 0..6),
            last in "(unknown|_[a-z0-9]{1,10}|[g-z]{0,10}|[0-9.]{0,6}:[a-z]{1,5})",
        ) {
            let mut entries: Vec<String> = earlier.iter().map(IpAddr::to_string).collect();
            entries.push(last);
            let line = entries.join(", ");
            prop_assert_eq!(proxy_added_address(&headers(&[&line])), None);
        }
    }
}
