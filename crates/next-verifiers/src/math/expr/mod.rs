//! A bounded parser and evaluator for answer expressions written in LaTeX or plain text:
//! numbers, fractions, roots, powers, factorials, binomial coefficients, constants, functions,
//! variables, tuples, intervals, sets, matrices and equations. Exact rational arithmetic where possible, complex floating
//! point otherwise; every recursion and every big-number operation has a hard bound.
//!
//! `lex.rs` turns text into tokens, `parse.rs` tokens into an [`Expr`], `eval.rs` evaluates it.

use num_rational::BigRational;

mod eval;
mod lex;
mod parse;

pub use parse::parse;

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
    /// `\binom{n}{k}` / `{n \choose k}`: n(n−1)…(n−k+1)/k! for a non-negative integer k.
    Binom(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    /// `a \pm b`: both values.
    PlusMinus(Box<Expr>, Box<Expr>),
    /// A bracketed sequence: tuple or interval, with its brackets.
    Seq(char, Vec<Expr>, char),
    /// `\{...\}` or a bare comma list: compared without order.
    Set(Vec<Expr>),
    /// A matrix environment (`pmatrix`, `bmatrix`, `array`, ...), row by row; a vector is a
    /// one-column (or one-row) matrix.
    Matrix(Vec<Vec<Expr>>),
    Eq(Box<Expr>, Box<Expr>),
}
