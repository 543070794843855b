//! String-level normalisation of answers before parsing: delimiters, spacing commands,
//! `\text{}` and units, degrees, percent, currency, thousands separators.

/// A normalised answer and whether it was written as a percentage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    pub percent: bool,
}

/// Commands removed outright (spacing, sizing, style).
const DROP: &[&str] = &[
    "\\left",
    "\\right",
    "\\big",
    "\\Big",
    "\\bigg",
    "\\Bigg",
    "\\displaystyle",
    "\\textstyle",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\quad",
    "\\qquad",
    "\\limits",
];

/// Commands replaced by their braced argument.
const UNWRAP: &[&str] = &[
    "\\text",
    "\\textbf",
    "\\textit",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\boldsymbol",
    "\\mbox",
    "\\textrm",
    "\\operatorname*",
    "\\mathbb",
];

/// Replaces `cmd{X}` by ` X ` for every command in `UNWRAP` (brace-matched).
fn unwrap_commands(s: &str) -> String {
    let mut out = s.to_string();
    for cmd in UNWRAP {
        let pat = format!("{cmd}{{");
        let mut guard = 0;
        while let Some(i) = out.find(&pat) {
            guard += 1;
            if guard > 1_000 {
                break;
            }
            let body_start = i + pat.len();
            let mut depth = 1;
            let mut end = None;
            for (j, c) in out[body_start..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(body_start + j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            let body = out[body_start..end].to_string();
            out = format!("{} {} {}", &out[..i], body, &out[end + 1..]);
        }
    }
    out
}

/// Whether `s` is a number written with thousands separators (`1,234,567.5`).
fn thousands(s: &str) -> Option<String> {
    let (sign, body) = s.strip_prefix('-').map_or(("", s), |b| ("-", b));
    let (int, frac) = body
        .split_once('.')
        .map_or((body, None), |(a, b)| (a, Some(b)));
    let groups: Vec<&str> = int.split(',').collect();
    if groups.len() < 2
        || groups[0].is_empty()
        || groups[0].len() > 3
        || !groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        || !groups[1..].iter().all(|g| g.len() == 3)
    {
        return None;
    }
    if frac.is_some_and(|f| f.is_empty() || !f.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    Some(format!(
        "{sign}{}{}",
        groups.concat(),
        frac.map(|f| format!(".{f}")).unwrap_or_default()
    ))
}

/// Trailing words after a numeric answer are units ("5 cm", "12 apples", "3 dollars").
fn strip_units(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut keep = words.len();
    while keep > 1 {
        let w = words[keep - 1];
        let is_word = w
            .chars()
            .all(|c| c.is_alphabetic() || c == '.' || c == '^' || c.is_ascii_digit())
            && w.chars().take(1).all(char::is_alphabetic)
            && w.chars().filter(|c| c.is_alphabetic()).count() >= 2;
        if !is_word {
            break;
        }
        keep -= 1;
    }
    if keep < words.len()
        && words[..keep]
            .iter()
            .any(|w| w.chars().any(|c| c.is_ascii_digit()))
    {
        words[..keep].join(" ")
    } else {
        words.join(" ")
    }
}

/// Replaces the control space `\ ` by a space, leaving the row break `\\` of a matrix (which
/// may itself be followed by a space) alone.
fn drop_control_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\')) => {
                out.push_str("\\\\");
                chars.next();
            }
            ('\\', Some(' ')) => {
                out.push(' ');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Normalises an answer string (see the module docs).
pub fn normalize(raw: &str) -> Normalized {
    let mut s = raw.trim().to_string();
    // Math delimiters.
    for (open, close) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
        if s.len() >= open.len() + close.len() && s.starts_with(open) && s.ends_with(close) {
            s = s[open.len()..s.len() - close.len()].trim().to_string();
        }
    }
    s = unwrap_commands(&s);
    for d in DROP {
        s = s.replace(d, " ");
    }
    s = drop_control_spaces(&s).replace('~', " ");
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac");
    s = s.replace("{,}", "");
    for deg in ["^{\\circ}", "^\\circ", "\\circ", "°", "\\degree"] {
        s = s.replace(deg, "");
    }
    let mut percent = false;
    for p in ["\\%", "%", "percent"] {
        if s.contains(p) {
            percent = true;
            s = s.replace(p, "");
        }
    }
    s = s.replace("\\$", "").replace('$', "");
    s = s.replace("\\infty", " \\infty ").replace("\\in ", "\\in");
    // "x \in [1, 2]" answers the interval.
    if let Some(i) = s.find("\\in") {
        if !s[i..].starts_with("\\inf") {
            s = s[i + 3..].to_string();
        }
    }
    s = strip_units(s.trim());
    let mut t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    while t.ends_with('.') || t.ends_with(',') {
        t.pop();
    }
    if let Some(n) = thousands(t.trim()) {
        t = n;
    }
    Normalized {
        text: t.trim().to_string(),
        percent,
    }
}

/// The letter of a multiple-choice answer (`A`, `(B)`, `C)`, `\text{(D)}`, `option E`).
pub fn choice_letter(s: &str) -> Option<char> {
    let t = s
        .trim()
        .trim_start_matches("option")
        .trim_start_matches("Option")
        .trim();
    let t = t
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim_end_matches('.')
        .trim();
    let mut chars = t.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if ('A'..='E').contains(&c) => Some(c),
        _ => None,
    }
}
