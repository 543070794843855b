//! Tokens of an answer expression: numbers (parsed exactly), identifiers, LaTeX commands and
//! symbols.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

use super::{Func, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(String),
    Ident(String),
    Cmd(String),
    Sym(char),
}

pub(super) fn tokenize(s: &str) -> Result<Vec<Tok>, ParseError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // Scientific notation: 1.5e-3, 2E10 (only when digits follow).
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '-' || chars[j] == '+') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c == '\\' {
            let start = i + 1;
            i += 1;
            if i < chars.len() && !chars[i].is_ascii_alphabetic() {
                // \{ \} \, \! \% ...
                out.push(Tok::Cmd(chars[i].to_string()));
                i += 1;
                continue;
            }
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Tok::Cmd(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c == '∞' {
            out.push(Tok::Cmd("infty".into()));
            i += 1;
        } else if c == 'π' {
            out.push(Tok::Cmd("pi".into()));
            i += 1;
        } else if c == '√' {
            out.push(Tok::Cmd("sqrt".into()));
            i += 1;
        } else if c == '−' || c == '–' {
            out.push(Tok::Sym('-'));
            i += 1;
        } else if c == '×' || c == '·' {
            out.push(Tok::Sym('*'));
            i += 1;
        } else if c == '÷' {
            out.push(Tok::Sym('/'));
            i += 1;
        } else if "+-*/^!()[]{}|,=_'&".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(ParseError(format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

pub(super) fn func_of(name: &str) -> Option<Func> {
    Some(match name {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" => Func::Tan,
        "cot" => Func::Cot,
        "sec" => Func::Sec,
        "csc" => Func::Csc,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "ln" => Func::Ln,
        "log" => Func::Log,
        "exp" => Func::Exp,
        "sqrt" => Func::Sqrt,
        "abs" => Func::Abs,
        _ => return None,
    })
}

/// Parses a decimal literal (with optional exponent) exactly.
pub(super) fn parse_number(s: &str) -> Result<BigRational, ParseError> {
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (
            &s[..i],
            s[i + 1..]
                .parse::<i64>()
                .map_err(|_| ParseError(format!("bad exponent in {s}")))?,
        ),
        None => (s, 0),
    };
    if mant.matches('.').count() > 1 {
        return Err(ParseError(format!("bad number {s}")));
    }
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{int}{frac}");
    let n: BigInt = if digits.is_empty() {
        BigInt::zero()
    } else {
        digits
            .parse()
            .map_err(|_| ParseError(format!("bad number {s}")))?
    };
    let scale = exp - frac.len() as i64;
    if scale.abs() > 10_000 {
        return Err(ParseError(format!("exponent too large in {s}")));
    }
    let ten = BigInt::from(10);
    Ok(if scale >= 0 {
        BigRational::from_integer(n * num_traits::pow(ten, scale as usize))
    } else {
        BigRational::new(n, num_traits::pow(ten, (-scale) as usize))
    })
}
