//! The recursive-descent parser: tokens to an [`Expr`], with a hard bound on nesting.

use num_rational::BigRational;
use num_traits::{Signed, Zero};

use super::eval::MAX_TREE_DEPTH;
use super::lex::{func_of, parse_number, tokenize, Tok};
use super::{Const, Expr, Func, ParseError};

/// Deepest nesting the parser accepts.
const MAX_DEPTH: usize = 150;

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
                    | "choose"
                    | "end"
                    | "\\"
                    | "hline"
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
                if items.len() == 1 && self.is_cmd("choose") {
                    self.pos += 1;
                    let k = self.expr()?;
                    self.expect_sym('}')?;
                    let n = items.into_iter().next().expect("one item");
                    Expr::Binom(Box::new(n), Box::new(k))
                } else {
                    self.expect_sym('}')?;
                    if items.len() == 1 {
                        items.into_iter().next().expect("one item")
                    } else {
                        Expr::Set(items)
                    }
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
                    "binom" | "dbinom" | "tbinom" => {
                        let n = self.arg()?;
                        let k = self.arg()?;
                        Expr::Binom(Box::new(n), Box::new(k))
                    }
                    "begin" => self.matrix()?,
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

    /// The name in `{name}` after `\begin` or `\end`.
    fn environment(&mut self) -> Result<String, ParseError> {
        self.expect_sym('{')?;
        let name = match self.peek().cloned() {
            Some(Tok::Ident(n)) => n,
            _ => return Err(ParseError("bad environment name".into())),
        };
        self.pos += 1;
        self.expect_sym('}')?;
        Ok(name)
    }

    /// A matrix environment after `\begin`: cells split by `&`, rows by `\\`, up to the
    /// matching `\end`. `vmatrix` (a determinant) and other environments are refused.
    fn matrix(&mut self) -> PResult {
        let env = self.environment()?;
        if !MATRICES.contains(&env.as_str()) {
            return Err(ParseError(format!("unsupported environment {env}")));
        }
        if env == "array" && self.eat_sym('{') {
            // The column specification (`{cc}`, `{c|c}`): layout only.
            while !self.eat_sym('}') {
                if self.peek().is_none() {
                    return Err(ParseError("unclosed array column specification".into()));
                }
                self.pos += 1;
            }
        }
        let mut rows: Vec<Vec<Expr>> = Vec::new();
        let mut row = Vec::new();
        loop {
            while self.is_cmd("hline") {
                self.pos += 1;
            }
            if self.is_cmd("end") {
                self.pos += 1;
                if self.environment()? != env {
                    return Err(ParseError(format!(
                        "\\begin{{{env}}} closed by another environment"
                    )));
                }
                break;
            }
            if self.is_cmd("\\") {
                // An empty last row (`... \\ \end`) is layout only.
                self.pos += 1;
                if !row.is_empty() {
                    rows.push(std::mem::take(&mut row));
                }
                continue;
            }
            row.push(self.expr()?);
            if self.eat_sym('&') {
                continue;
            }
            if !(self.is_cmd("\\") || self.is_cmd("end")) {
                return Err(ParseError(format!(
                    "unexpected {:?} in a matrix",
                    self.peek()
                )));
            }
            if self.is_cmd("end") {
                rows.push(std::mem::take(&mut row));
            }
        }
        if !row.is_empty() {
            rows.push(row);
        }
        let width = rows.first().map_or(0, Vec::len);
        if width == 0 || rows.iter().any(|r| r.len() != width) {
            return Err(ParseError("a matrix with ragged or no rows".into()));
        }
        Ok(Expr::Matrix(rows))
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

/// Environments read as matrices.
const MATRICES: &[&str] = &[
    "pmatrix",
    "bmatrix",
    "Bmatrix",
    "matrix",
    "smallmatrix",
    "array",
];

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
