//! A bounded parser and evaluator for answer expressions written in LaTeX or plain text:
//! numbers, fractions, roots, powers, factorials, constants, functions, variables, tuples,
//! intervals, sets and equations. Exact rational arithmetic where possible, complex floating
//! point otherwise; every recursion and every big-number operation has a hard bound.

use std::collections::BTreeSet;

use num_bigint::BigInt;
use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

/// Limits that keep evaluation of hostile input bounded.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Largest |exponent| evaluated exactly.
    pub max_exponent: u64,
    /// Largest number of bits an exact intermediate may have.
    pub max_bits: u64,
    /// Largest n for which n! is computed exactly.
    pub max_factorial: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_exponent: 10_000,
            max_bits: 200_000,
            max_factorial: 3_000,
        }
    }
}

/// Deepest nesting the parser accepts.
const MAX_DEPTH: usize = 150;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Ln,
    Log,
    Exp,
    Sqrt,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    I,
    Inf,
}

/// An answer expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(BigRational),
    Const(Const),
    Var(String),
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// n-th root: `Root(n, x)`.
    Root(Box<Expr>, Box<Expr>),
    Factorial(Box<Expr>),
    Func(Func, Box<Expr>),
    /// `a \pm b`: both values.
    PlusMinus(Box<Expr>, Box<Expr>),
    /// A bracketed sequence: tuple or interval, with its brackets.
    Seq(char, Vec<Expr>, char),
    /// `\{...\}` or a bare comma list: compared without order.
    Set(Vec<Expr>),
    Eq(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Ident(String),
    Cmd(String),
    Sym(char),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, ParseError> {
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
        } else if "+-*/^!()[]{}|,=_'".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(ParseError(format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

fn func_of(name: &str) -> Option<Func> {
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
fn parse_number(s: &str) -> Result<BigRational, ParseError> {
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

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    /// Whether the last primary parsed was a `\frac` (for mixed numbers like `2\frac{1}{2}`).
    last_was_frac: bool,
}

type PResult = Result<Expr, ParseError>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn is_sym(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Sym(c))
    }

    fn is_cmd(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Cmd(n)) if n == name)
    }

    fn eat_sym(&mut self, c: char) -> bool {
        if self.is_sym(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(ParseError(format!("expected {c:?} at token {}", self.pos)))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ParseError("expression nested too deeply".into()))
        } else {
            Ok(())
        }
    }

    /// A comma-separated list of equations/expressions up to (not including) a closing token.
    fn list(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut items = vec![self.equation()?];
        while self.eat_sym(',') {
            items.push(self.equation()?);
        }
        Ok(items)
    }

    fn equation(&mut self) -> PResult {
        let lhs = self.expr()?;
        if self.eat_sym('=') {
            let rhs = self.equation()?;
            return Ok(Expr::Eq(Box::new(lhs), Box::new(rhs)));
        }
        Ok(lhs)
    }

    fn expr(&mut self) -> PResult {
        self.enter()?;
        let mut lhs = if self.is_cmd("pm") {
            // A leading `\pm 1`: both signs.
            self.pos += 1;
            Expr::PlusMinus(
                Box::new(Expr::Num(BigRational::zero())),
                Box::new(self.term()?),
            )
        } else {
            self.term()?
        };
        loop {
            if self.eat_sym('+') {
                lhs = Expr::Add(Box::new(lhs), Box::new(self.term()?));
            } else if self.eat_sym('-') {
                lhs = Expr::Sub(Box::new(lhs), Box::new(self.term()?));
            } else if self.is_cmd("pm") {
                self.pos += 1;
                lhs = Expr::PlusMinus(Box::new(lhs), Box::new(self.term()?));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn starts_primary(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) | Some(Tok::Ident(_)) => true,
            Some(Tok::Sym(c)) => matches!(c, '(' | '[' | '{'),
            Some(Tok::Cmd(c)) => !matches!(
                c.as_str(),
                "cdot"
                    | "times"
                    | "div"
                    | "pm"
                    | "mp"
                    | "}"
                    | "le"
                    | "ge"
                    | "leq"
                    | "geq"
                    | "cup"
                    | "right"
                    | "%"
                    | "circ"
            ),
            None => false,
        }
    }

    fn term(&mut self) -> PResult {
        let mut lhs = self.unary()?;
        loop {
            if self.eat_sym('*')
                || (self.is_cmd("cdot") || self.is_cmd("times")) && {
                    self.pos += 1;
                    true
                }
            {
                lhs = Expr::Mul(Box::new(lhs), Box::new(self.unary()?));
            } else if self.eat_sym('/')
                || self.is_cmd("div") && {
                    self.pos += 1;
                    true
                }
            {
                lhs = Expr::Div(Box::new(lhs), Box::new(self.unary()?));
            } else if self.starts_primary() {
                // Mixed number: an integer literal followed by \frac of integer literals.
                let rhs = self.power()?;
                let mixed = matches!((&lhs, &rhs), (Expr::Num(a), Expr::Div(p, q)) if a.is_integer() && !a.is_negative()
                    && matches!(**p, Expr::Num(ref x) if x.is_integer()) && matches!(**q, Expr::Num(ref y) if y.is_integer()))
                    && self.last_was_frac;
                lhs = if mixed {
                    Expr::Add(Box::new(lhs), Box::new(rhs))
                } else {
                    Expr::Mul(Box::new(lhs), Box::new(rhs))
                };
            } else {
                break;
            }
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let e = if self.eat_sym('-') {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat_sym('+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn power(&mut self) -> PResult {
        self.last_was_frac = false;
        let base = self.postfix()?;
        if self.eat_sym('^') {
            self.enter()?;
            let exp = if self.is_sym('{') {
                self.primary()?
            } else {
                self.unary()?
            };
            self.depth -= 1;
            self.last_was_frac = false;
            return Ok(Expr::Pow(Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> PResult {
        let mut e = self.primary()?;
        while self.eat_sym('!') {
            e = Expr::Factorial(Box::new(e));
        }
        Ok(e)
    }

    /// The argument of `\frac`, `\sqrt`: a braced group, or a single token.
    fn arg(&mut self) -> PResult {
        if self.is_sym('{') {
            self.pos += 1;
            let e = self.expr()?;
            self.expect_sym('}')?;
            return Ok(e);
        }
        match self.toks.get(self.pos).cloned() {
            // \frac12 means 1/2: a bare number argument is one digit.
            Some(Tok::Num(n)) => {
                let first: String = n.chars().take(1).collect();
                if n.len() > 1 {
                    self.toks[self.pos] = Tok::Num(n[1..].to_string());
                } else {
                    self.pos += 1;
                }
                Ok(Expr::Num(parse_number(&first)?))
            }
            _ => self.power(),
        }
    }

    /// `( ... )` or `[ ... ]`: grouping, a tuple, or an interval (which may close with the
    /// other bracket: `[1, 2)`).
    fn bracketed(&mut self, open: char) -> PResult {
        let close = if open == '(' { ')' } else { ']' };
        self.pos += 1;
        let items = self.list()?;
        let closer = match self.peek() {
            Some(Tok::Sym(c)) if *c == ')' || *c == ']' => *c,
            _ => return Err(ParseError(format!("unclosed {open:?}"))),
        };
        self.pos += 1;
        if items.len() == 1 {
            if closer != close {
                return Err(ParseError(format!("{open:?} closed by {closer:?}")));
            }
            return Ok(items.into_iter().next().expect("one item"));
        }
        Ok(Expr::Seq(open, items, closer))
    }

    fn primary(&mut self) -> PResult {
        self.enter()?;
        let tok = self
            .peek()
            .cloned()
            .ok_or_else(|| ParseError("unexpected end of expression".into()))?;
        let e = match tok {
            Tok::Num(n) => {
                self.pos += 1;
                Expr::Num(parse_number(&n)?)
            }
            Tok::Sym('(') | Tok::Sym('[') => {
                self.bracketed(if tok == Tok::Sym('(') { '(' } else { '[' })?
            }
            Tok::Sym('{') => {
                self.pos += 1;
                let items = self.list()?;
                self.expect_sym('}')?;
                if items.len() == 1 {
                    items.into_iter().next().expect("one item")
                } else {
                    Expr::Set(items)
                }
            }
            Tok::Sym('|') => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect_sym('|')?;
                Expr::Func(Func::Abs, Box::new(e))
            }
            Tok::Ident(name) => {
                self.pos += 1;
                if let Some(f) = func_of(&name) {
                    self.function(f)?
                } else if name.chars().count() == 1 {
                    self.subscripted(name)?
                } else {
                    // Several letters: a product of single-letter variables (xy = x*y).
                    let mut it = name.chars();
                    let mut e = Expr::Var(it.next().expect("non-empty").to_string());
                    for c in it {
                        e = Expr::Mul(Box::new(e), Box::new(Expr::Var(c.to_string())));
                    }
                    e
                }
            }
            Tok::Cmd(c) => {
                self.pos += 1;
                match c.as_str() {
                    "frac" | "dfrac" | "tfrac" | "cfrac" => {
                        let n = self.arg()?;
                        let d = self.arg()?;
                        let e = Expr::Div(Box::new(n), Box::new(d));
                        self.depth -= 1;
                        self.last_was_frac = true;
                        return Ok(e);
                    }
                    "sqrt" => {
                        if self.eat_sym('[') {
                            let n = self.expr()?;
                            self.expect_sym(']')?;
                            Expr::Root(Box::new(n), Box::new(self.arg()?))
                        } else {
                            Expr::Func(Func::Sqrt, Box::new(self.arg()?))
                        }
                    }
                    "pi" => Expr::Const(Const::Pi),
                    "infty" | "infinity" => Expr::Const(Const::Inf),
                    "{" => {
                        let items = if self.is_cmd("}") {
                            vec![]
                        } else {
                            self.list()?
                        };
                        if !self.is_cmd("}") {
                            return Err(ParseError("unclosed \\{".into()));
                        }
                        self.pos += 1;
                        Expr::Set(items)
                    }
                    "lvert" | "vert" => {
                        let e = self.expr()?;
                        if !(self.is_cmd("rvert") || self.is_cmd("vert")) {
                            return Err(ParseError("unclosed \\lvert".into()));
                        }
                        self.pos += 1;
                        Expr::Func(Func::Abs, Box::new(e))
                    }
                    "operatorname" => {
                        self.expect_sym('{')?;
                        let name = match self.peek().cloned() {
                            Some(Tok::Ident(n)) => n,
                            _ => return Err(ParseError("bad \\operatorname".into())),
                        };
                        self.pos += 1;
                        self.expect_sym('}')?;
                        let f = func_of(&name)
                            .ok_or_else(|| ParseError(format!("unknown function {name}")))?;
                        self.function(f)?
                    }
                    other => {
                        if let Some(f) = func_of(other) {
                            self.function(f)?
                        } else if GREEK.contains(&other) {
                            self.subscripted(other.to_string())?
                        } else {
                            return Err(ParseError(format!("unsupported command \\{other}")));
                        }
                    }
                }
            }
            Tok::Sym(c) => return Err(ParseError(format!("unexpected {c:?}"))),
        };
        self.depth -= 1;
        Ok(e)
    }

    /// A variable with an optional subscript (`x_1`, `a_{n}`) folded into its name.
    fn subscripted(&mut self, mut name: String) -> PResult {
        if self.eat_sym('_') {
            match self.peek().cloned() {
                Some(Tok::Num(n)) | Some(Tok::Ident(n)) => {
                    self.pos += 1;
                    name = format!("{name}_{n}");
                }
                Some(Tok::Sym('{')) => {
                    self.pos += 1;
                    let mut sub = String::new();
                    while let Some(t) = self.peek().cloned() {
                        self.pos += 1;
                        match t {
                            Tok::Sym('}') => break,
                            Tok::Num(s) | Tok::Ident(s) | Tok::Cmd(s) => sub.push_str(&s),
                            Tok::Sym(c) => sub.push(c),
                        }
                    }
                    name = format!("{name}_{sub}");
                }
                _ => return Err(ParseError("bad subscript".into())),
            }
        }
        if name == "e" {
            return Ok(Expr::Const(Const::E));
        }
        if name == "i" {
            return Ok(Expr::Const(Const::I));
        }
        Ok(Expr::Var(name))
    }

    fn function(&mut self, f: Func) -> PResult {
        // \sin^2 x = (\sin x)^2; \log_2 x = ln x / ln 2.
        let mut power = None;
        if self.eat_sym('^') {
            power = Some(if self.is_sym('{') {
                self.primary()?
            } else {
                self.postfix()?
            });
        }
        let mut base = None;
        if f == Func::Log && self.eat_sym('_') {
            base = Some(if self.is_sym('{') {
                self.primary()?
            } else {
                self.postfix()?
            });
        }
        let arg = if self.is_sym('(') {
            self.primary()?
        } else {
            self.unary_no_sum()?
        };
        let mut e = Expr::Func(f, Box::new(arg));
        if let Some(b) = base {
            e = Expr::Div(
                Box::new(Expr::Func(
                    Func::Ln,
                    Box::new(match e {
                        Expr::Func(_, a) => *a,
                        _ => unreachable!("built above"),
                    }),
                )),
                Box::new(Expr::Func(Func::Ln, Box::new(b))),
            );
        }
        if let Some(p) = power {
            e = Expr::Pow(Box::new(e), Box::new(p));
        }
        Ok(e)
    }

    /// A function argument without parentheses: `\sin 2x` takes `2x`.
    fn unary_no_sum(&mut self) -> PResult {
        let mut e = self.power()?;
        while self.starts_primary()
            && !matches!(self.peek(), Some(Tok::Cmd(c)) if func_of(c).is_some())
        {
            e = Expr::Mul(Box::new(e), Box::new(self.power()?));
        }
        Ok(e)
    }
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "theta",
    "lambda",
    "mu",
    "sigma",
    "phi",
    "omega",
    "tau",
    "rho",
    "epsilon",
    "varepsilon",
    "varphi",
    "psi",
    "chi",
    "eta",
    "zeta",
    "kappa",
    "nu",
    "xi",
];

/// Parses an (already normalised) answer. A top-level comma list becomes a `Set`.
pub fn parse(s: &str) -> PResult {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err(ParseError("empty expression".into()));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        last_was_frac: false,
    };
    let items = p.list()?;
    if p.pos != p.toks.len() {
        return Err(ParseError(format!("unexpected {:?}", p.toks[p.pos])));
    }
    let e = if items.len() == 1 {
        items.into_iter().next().expect("one item")
    } else {
        Expr::Set(items)
    };
    // Long chains (`1+1+...`, `xxxx...`) build deep trees without deep parsing; evaluation
    // recurses over the tree, so bound its depth too.
    if e.depth() > MAX_TREE_DEPTH {
        return Err(ParseError("expression too deep".into()));
    }
    Ok(e)
}

/// Deepest expression tree evaluated (evaluation recurses once per level).
const MAX_TREE_DEPTH: usize = 100;

fn bits(r: &BigRational) -> u64 {
    r.numer().bits() + r.denom().bits()
}

/// Exact integer k-th root of a non-negative integer, if there is one.
fn int_root(n: &BigInt, k: u32) -> Option<BigInt> {
    if n.is_negative() {
        return None;
    }
    let r = n.nth_root(k);
    if num_traits::pow(r.clone(), k as usize) == *n {
        Some(r)
    } else {
        None
    }
}

fn rational_pow(base: &BigRational, exp: &BigRational, b: &Budget) -> Option<BigRational> {
    if !exp.is_integer() {
        // a^(p/q) is rational when a is a perfect q-th power.
        let q = exp.denom().to_u32()?;
        if q > 64 || base.is_negative() {
            return None;
        }
        let root = BigRational::new(int_root(base.numer(), q)?, int_root(base.denom(), q)?);
        return rational_pow(&root, &BigRational::from_integer(exp.numer().clone()), b);
    }
    let e = exp.to_integer().to_i64()?;
    if e.unsigned_abs() > b.max_exponent || bits(base).saturating_mul(e.unsigned_abs()) > b.max_bits
    {
        return None;
    }
    if base.is_zero() && e < 0 {
        return None;
    }
    let p = num_traits::pow(base.clone(), e.unsigned_abs() as usize);
    Some(if e < 0 { p.recip() } else { p })
}

impl Expr {
    /// The exact rational value, when the expression has one and it can be computed within
    /// the budget (no variables, no transcendental constants).
    pub fn eval_exact(&self, b: &Budget) -> Option<BigRational> {
        let r = match self {
            Expr::Num(n) => n.clone(),
            Expr::Neg(a) => -a.eval_exact(b)?,
            Expr::Add(x, y) => x.eval_exact(b)? + y.eval_exact(b)?,
            Expr::Sub(x, y) => x.eval_exact(b)? - y.eval_exact(b)?,
            Expr::Mul(x, y) => x.eval_exact(b)? * y.eval_exact(b)?,
            Expr::Div(x, y) => {
                let d = y.eval_exact(b)?;
                if d.is_zero() {
                    return None;
                }
                x.eval_exact(b)? / d
            }
            Expr::Pow(x, y) => rational_pow(&x.eval_exact(b)?, &y.eval_exact(b)?, b)?,
            Expr::Func(Func::Sqrt, x) => {
                rational_pow(&x.eval_exact(b)?, &BigRational::new(1.into(), 2.into()), b)?
            }
            Expr::Func(Func::Abs, x) => x.eval_exact(b)?.abs(),
            Expr::Root(n, x) => {
                let n = n.eval_exact(b)?;
                if !n.is_integer() || n.is_zero() {
                    return None;
                }
                rational_pow(&x.eval_exact(b)?, &n.recip(), b)?
            }
            Expr::Factorial(x) => {
                let n = x.eval_exact(b)?;
                if !n.is_integer() || n.is_negative() {
                    return None;
                }
                let n = n.to_integer().to_u64()?;
                if n > b.max_factorial {
                    return None;
                }
                BigRational::from_integer((1..=n).fold(BigInt::one(), |acc, k| acc * k))
            }
            _ => return None,
        };
        if bits(&r) > b.max_bits {
            return None;
        }
        Some(r)
    }

    /// The complex value with variables bound by `env` (name → value); `None` when undefined.
    pub fn eval_num(&self, env: &dyn Fn(&str) -> Option<Complex64>) -> Option<Complex64> {
        let c = |x: f64| Complex64::new(x, 0.0);
        let v = match self {
            Expr::Num(n) => c(n.to_f64()?),
            Expr::Const(Const::Pi) => c(std::f64::consts::PI),
            Expr::Const(Const::E) => c(std::f64::consts::E),
            Expr::Const(Const::I) => Complex64::new(0.0, 1.0),
            Expr::Const(Const::Inf) => return None,
            Expr::Var(name) => env(name)?,
            Expr::Neg(a) => -a.eval_num(env)?,
            Expr::Add(x, y) => x.eval_num(env)? + y.eval_num(env)?,
            Expr::Sub(x, y) => x.eval_num(env)? - y.eval_num(env)?,
            Expr::Mul(x, y) => x.eval_num(env)? * y.eval_num(env)?,
            Expr::Div(x, y) => x.eval_num(env)? / y.eval_num(env)?,
            Expr::Pow(x, y) => {
                let (b, e) = (x.eval_num(env)?, y.eval_num(env)?);
                if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 64.0 {
                    b.powi(e.re as i32)
                } else if b.im == 0.0 && b.re > 0.0 && e.im == 0.0 {
                    c(b.re.powf(e.re))
                } else {
                    b.powc(e)
                }
            }
            Expr::Root(n, x) => {
                let (n, x) = (n.eval_num(env)?, x.eval_num(env)?);
                // Odd roots of negative reals are real, as graders expect.
                if n.im == 0.0 && x.im == 0.0 && x.re < 0.0 && (n.re as i64) % 2 == 1 {
                    c(-(-x.re).powf(1.0 / n.re))
                } else {
                    x.powc(n.inv())
                }
            }
            Expr::Factorial(x) => {
                let n = x.eval_num(env)?;
                if n.im != 0.0 || n.re < 0.0 || n.re.fract() != 0.0 || n.re > 170.0 {
                    return None;
                }
                c((1..=n.re as u64).map(|k| k as f64).product())
            }
            Expr::Func(f, x) => {
                let x = x.eval_num(env)?;
                match f {
                    Func::Sin => x.sin(),
                    Func::Cos => x.cos(),
                    Func::Tan => x.tan(),
                    Func::Cot => x.tan().inv(),
                    Func::Sec => x.cos().inv(),
                    Func::Csc => x.sin().inv(),
                    Func::Asin => x.asin(),
                    Func::Acos => x.acos(),
                    Func::Atan => x.atan(),
                    Func::Ln | Func::Log => x.ln(),
                    Func::Exp => x.exp(),
                    Func::Sqrt => x.sqrt(),
                    Func::Abs => c(x.norm()),
                }
            }
            Expr::PlusMinus(..) | Expr::Seq(..) | Expr::Set(..) | Expr::Eq(..) => return None,
        };
        if v.re.is_finite() && v.im.is_finite() {
            Some(v)
        } else {
            None
        }
    }

    /// The direct subexpressions.
    fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Num(_) | Expr::Const(_) | Expr::Var(_) => vec![],
            Expr::Neg(a) | Expr::Factorial(a) | Expr::Func(_, a) => vec![a],
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::Root(a, b)
            | Expr::PlusMinus(a, b)
            | Expr::Eq(a, b) => vec![a, b],
            Expr::Seq(_, items, _) | Expr::Set(items) => items.iter().collect(),
        }
    }

    /// Depth of the tree, computed without recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((e, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(e.children().into_iter().map(|c| (c, d + 1)));
        }
        deepest
    }

    /// Names of the free variables.
    pub fn vars(&self, out: &mut BTreeSet<String>) {
        if let Expr::Var(n) = self {
            out.insert(n.clone());
        }
        for c in self.children() {
            c.vars(out);
        }
    }
}
