//! kernels/scalpel_kernels.h turned into Rust: its constants, enums, structs and functions, and a
//! table of the functions (`Kernels`) filled twice — from the nvcc-compiled kernels (`REAL`, with
//! the `cuda` feature) and from the same kernels compiled for the mock device (`MOCK`, whose
//! symbols build.rs renames to scalpel_mock_*). The header is plain C in a small subset (typedef'd
//! enums and structs of scalars, an opaque stream pointer, functions of scalars and pointers), so a
//! small parser reads it with no libclang; anything outside the subset is a build error naming the
//! declaration. The layout is checked twice: C static assertions compiled with the mock (sizes,
//! offsets, and every function's exact type) and Rust const assertions, both from the numbers
//! computed here.

use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    Void,
    Char,
    Int,
    Float,
    Double,
    I32,
    U32,
    I64,
    U64,
    U16,
    U8,
    Size,
    Named(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CType {
    pub base: Base,
    pub is_const: bool,
    /// Levels of pointer (0 or 1 in the subset); `is_const` then qualifies the pointee.
    pub pointers: usize,
}

#[derive(Debug)]
pub struct Param {
    pub ty: CType,
    pub name: String,
}

#[derive(Debug)]
pub struct Function {
    pub ret: CType,
    pub name: String,
    pub params: Vec<Param>,
}

#[derive(Debug)]
pub enum Item {
    Const(String, i64),
    Opaque { tag: String, name: String },
    Enum { name: String, variants: Vec<(String, i64)> },
    Struct { name: String, fields: Vec<Param> },
    Function(Function),
}

pub struct Header {
    pub items: Vec<Item>,
}

fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.extend(src[i..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
            i = end;
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
            out.extend(std::iter::repeat_n(' ', end - i));
            i = end;
        } else {
            let c = src[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' && cur.is_empty() {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn base_of(word: &str, typedefs: &BTreeMap<String, ()>) -> Result<Base, String> {
    Ok(match word {
        "void" => Base::Void,
        "char" => Base::Char,
        "int" => Base::Int,
        "float" => Base::Float,
        "double" => Base::Double,
        "int32_t" => Base::I32,
        "uint32_t" => Base::U32,
        "int64_t" => Base::I64,
        "uint64_t" => Base::U64,
        "uint16_t" => Base::U16,
        "uint8_t" => Base::U8,
        "size_t" => Base::Size,
        w if typedefs.contains_key(w) => Base::Named(w.to_string()),
        w => return Err(format!("unknown type {w:?}")),
    })
}

/// `[const] base [*]... name` (a parameter or a field), or without the name for a return type.
fn parse_decl(toks: &[String], typedefs: &BTreeMap<String, ()>, named: bool) -> Result<Param, String> {
    let mut i = 0;
    let mut is_const = false;
    while i < toks.len() && toks[i] == "const" {
        is_const = true;
        i += 1;
    }
    let base = base_of(toks.get(i).ok_or("a type is missing")?, typedefs)?;
    i += 1;
    if i < toks.len() && toks[i] == "const" {
        is_const = true;
        i += 1;
    }
    let mut pointers = 0;
    while i < toks.len() && toks[i] == "*" {
        pointers += 1;
        i += 1;
    }
    let name = if named {
        let n = toks.get(i).ok_or("a name is missing")?.clone();
        i += 1;
        n
    } else {
        String::new()
    };
    if i != toks.len() {
        return Err(format!("unexpected {:?}", &toks[i..]));
    }
    if pointers > 1 {
        return Err("pointers to pointers are outside the subset".into());
    }
    Ok(Param { ty: CType { base, is_const, pointers }, name })
}

pub fn parse(src: &str) -> Result<Header, String> {
    let text = strip_comments(src);
    // Preprocessor lines: keep integer #defines, drop the rest, and skip what only C++ sees.
    let mut body = String::new();
    let mut items = Vec::new();
    let mut skip = 0;
    for line in text.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix('#') {
            let d = d.trim();
            if d.starts_with("ifdef __cplusplus") {
                skip += 1;
            } else if d.starts_with("endif") && skip > 0 {
                skip -= 1;
            } else if let Some(rest) = d.strip_prefix("define ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next())
                    && let Ok(v) = value.parse::<i64>()
                {
                    items.push(Item::Const(name.to_string(), v));
                }
            }
            continue;
        }
        if skip == 0 {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut typedefs = BTreeMap::new();
    let mut depth = 0;
    let mut stmt = String::new();
    let mut statements = Vec::new();
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                statements.push(std::mem::take(&mut stmt));
                continue;
            }
            _ => {}
        }
        stmt.push(c);
    }
    if !stmt.trim().is_empty() {
        return Err(format!("a declaration without its ';': {:?}", stmt.trim()));
    }
    for s in statements {
        let toks = tokens(&s);
        if toks.is_empty() {
            continue;
        }
        let what = || s.split_whitespace().collect::<Vec<_>>().join(" ");
        let item = parse_statement(&toks, &typedefs).map_err(|e| format!("{e} in `{}`", what()))?;
        match &item {
            Item::Opaque { name, .. } | Item::Enum { name, .. } | Item::Struct { name, .. } => {
                typedefs.insert(name.clone(), ());
            }
            _ => {}
        }
        items.push(item);
    }
    Ok(Header { items })
}

fn parse_statement(t: &[String], typedefs: &BTreeMap<String, ()>) -> Result<Item, String> {
    if t[0] == "typedef" {
        if t.len() == 5 && t[1] == "struct" && t[3] == "*" {
            return Ok(Item::Opaque { tag: t[2].clone(), name: t[4].clone() });
        }
        let open = t.iter().position(|x| x == "{").ok_or("a typedef without a body")?;
        let close = t.iter().rposition(|x| x == "}").ok_or("a typedef without a closing brace")?;
        let name = t.get(close + 1).ok_or("a typedef without a name")?.clone();
        if close + 2 != t.len() {
            return Err("trailing tokens after the typedef's name".into());
        }
        let inner = &t[open + 1..close];
        return match t[1].as_str() {
            "enum" => {
                let mut variants = Vec::new();
                for v in inner.split(|x| x == ",").filter(|v| !v.is_empty()) {
                    match v {
                        [n, eq, val] if eq == "=" => variants
                            .push((n.clone(), val.parse().map_err(|_| format!("enum value {val:?}"))?)),
                        _ => return Err(format!("enum variants need explicit values: {v:?}")),
                    }
                }
                Ok(Item::Enum { name, variants })
            }
            "struct" => {
                let mut fields = Vec::new();
                for f in inner.split(|x| x == ";").filter(|f| !f.is_empty()) {
                    // `int a, b;` is outside the subset: one field per declaration.
                    if f.iter().any(|x| x == ",") {
                        return Err("one field per declaration".into());
                    }
                    fields.push(parse_decl(f, typedefs, true)?);
                }
                Ok(Item::Struct { name, fields })
            }
            other => Err(format!("typedef {other} is outside the subset")),
        };
    }
    let open = t.iter().position(|x| x == "(").ok_or("not a function declaration")?;
    if t.last().map(String::as_str) != Some(")") {
        return Err("a function declaration must end with its parameter list".into());
    }
    let name = t[open - 1].clone();
    let ret = parse_decl(&t[..open - 1], typedefs, false)?.ty;
    let inner = &t[open + 1..t.len() - 1];
    let mut params = Vec::new();
    if !(inner.len() == 1 && inner[0] == "void") {
        for p in inner.split(|x| x == ",") {
            params.push(parse_decl(p, typedefs, true)?);
        }
    }
    Ok(Item::Function(Function { ret, name, params }))
}

/// A C name as a Rust identifier (a parameter called `in` or `type` is fine in C).
fn ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
        "pub", "ref", "return", "static", "struct", "trait", "type", "unsafe", "use", "where", "while",
        "yield",
    ];
    if KEYWORDS.contains(&name) { format!("r#{name}") } else { name.to_string() }
}

fn rust_base(b: &Base) -> String {
    match b {
        Base::Void => "::std::ffi::c_void".into(),
        Base::Char => "::std::ffi::c_char".into(),
        Base::Int => "::std::ffi::c_int".into(),
        Base::Float => "f32".into(),
        Base::Double => "f64".into(),
        Base::I32 => "i32".into(),
        Base::U32 => "u32".into(),
        Base::I64 => "i64".into(),
        Base::U64 => "u64".into(),
        Base::U16 => "u16".into(),
        Base::U8 => "u8".into(),
        Base::Size => "usize".into(),
        Base::Named(n) => n.clone(),
    }
}

fn rust_type(t: &CType) -> String {
    if t.pointers == 0 {
        return if t.base == Base::Void { "()".into() } else { rust_base(&t.base) };
    }
    format!("{} {}", if t.is_const { "*const" } else { "*mut" }, rust_base(&t.base))
}

fn c_type(t: &CType) -> String {
    let base = match &t.base {
        Base::Void => "void".to_string(),
        Base::Char => "char".into(),
        Base::Int => "int".into(),
        Base::Float => "float".into(),
        Base::Double => "double".into(),
        Base::I32 => "int32_t".into(),
        Base::U32 => "uint32_t".into(),
        Base::I64 => "int64_t".into(),
        Base::U64 => "uint64_t".into(),
        Base::U16 => "uint16_t".into(),
        Base::U8 => "uint8_t".into(),
        Base::Size => "size_t".into(),
        Base::Named(n) => n.clone(),
    };
    format!("{}{}{}", if t.is_const { "const " } else { "" }, base, "*".repeat(t.pointers))
}

/// (size, alignment) of a field's type on the 64-bit targets scalpel builds for.
fn layout(t: &CType, h: &Header) -> Result<(usize, usize), String> {
    if t.pointers > 0 {
        return Ok((8, 8));
    }
    Ok(match &t.base {
        Base::Char | Base::U8 => (1, 1),
        Base::U16 => (2, 2),
        Base::Int | Base::Float | Base::I32 | Base::U32 => (4, 4),
        Base::Double | Base::I64 | Base::U64 | Base::Size => (8, 8),
        Base::Void => return Err("a void field".into()),
        Base::Named(n) => {
            let found: Option<Result<(usize, usize), String>> = h.items.iter().find_map(|i| match i {
                Item::Enum { name, .. } if name == n => Some(Ok((4, 4))),
                Item::Opaque { name, .. } if name == n => Some(Ok((8, 8))),
                Item::Struct { name, fields } if name == n => {
                    Some(struct_layout(fields, h).map(|(s, a, _)| (s, a)))
                }
                _ => None,
            });
            found.ok_or_else(|| format!("no layout for {n}"))??
        }
    })
}

fn struct_layout(fields: &[Param], h: &Header) -> Result<(usize, usize, Vec<usize>), String> {
    let (mut off, mut align, mut offsets) = (0usize, 1usize, Vec::new());
    for f in fields {
        let (s, a) = layout(&f.ty, h)?;
        off = off.div_ceil(a) * a;
        offsets.push(off);
        off += s;
        align = align.max(a);
    }
    Ok((off.div_ceil(align) * align, align, offsets))
}

/// The Rust module (types, the `Kernels` table, REAL and MOCK) and the C++ checks.
pub fn generate(h: &Header, header_path: &str) -> Result<(String, String), String> {
    let mut rs = String::new();
    let mut cc = String::new();
    let w = |s: &mut String, t: String| s.push_str(&t);
    w(&mut rs, format!("// Generated by build.rs from {header_path}: edit the header, not this file.\n\n"));
    w(
        &mut cc,
        format!(
            "// Generated by build.rs: the layout and signatures the Rust side assumes, checked by the C++ compiler.\n#include <cstddef>\n#include <type_traits>\n#include \"{header_path}\"\n\n"
        ),
    );
    let functions: Vec<&Function> =
        h.items.iter().filter_map(|i| if let Item::Function(f) = i { Some(f) } else { None }).collect();
    for item in &h.items {
        match item {
            Item::Const(n, v) => w(&mut rs, format!("pub const {n}: i32 = {v};\n")),
            Item::Opaque { tag, name } => w(
                &mut rs,
                format!(
                    "#[repr(C)]\npub struct {tag} {{\n    _opaque: [u8; 0],\n}}\npub type {name} = *mut {tag};\n"
                ),
            ),
            Item::Enum { name, variants } => {
                w(
                    &mut rs,
                    format!(
                        "#[repr(C)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]\npub enum {name} {{\n"
                    ),
                );
                for (v, x) in variants {
                    w(&mut rs, format!("    {v} = {x},\n"));
                }
                rs.push_str("}\n");
                w(&mut cc, format!("static_assert(sizeof({name}) == 4, \"{name}: an enum is an int\");\n"));
            }
            Item::Struct { name, fields } => {
                let (size, align, offsets) = struct_layout(fields, h)?;
                w(
                    &mut rs,
                    format!(
                        "#[repr(C)]\n#[derive(Clone, Copy, Debug, Default, PartialEq)]\npub struct {name} {{\n"
                    ),
                );
                for f in fields {
                    w(&mut rs, format!("    pub {}: {},\n", ident(&f.name), rust_type(&f.ty)));
                }
                rs.push_str("}\n");
                w(
                    &mut rs,
                    format!(
                        "const _: () = assert!(::std::mem::size_of::<{name}>() == {size} && ::std::mem::align_of::<{name}>() == {align});\n"
                    ),
                );
                w(
                    &mut cc,
                    format!(
                        "static_assert(sizeof({name}) == {size} && alignof({name}) == {align}, \"{name}: size\");\n"
                    ),
                );
                for (f, o) in fields.iter().zip(&offsets) {
                    w(
                        &mut rs,
                        format!(
                            "const _: () = assert!(::std::mem::offset_of!({name}, {}) == {o});\n",
                            f.name
                        ),
                    );
                    w(
                        &mut cc,
                        format!(
                            "static_assert(offsetof({name}, {}) == {o}, \"{name}.{}: offset\");\n",
                            f.name, f.name
                        ),
                    );
                }
            }
            Item::Function(_) => {}
        }
    }
    let sig = |f: &Function| -> String {
        let ps: Vec<String> =
            f.params.iter().map(|p| format!("{}: {}", ident(&p.name), rust_type(&p.ty))).collect();
        let ret = if f.ret.base == Base::Void && f.ret.pointers == 0 {
            String::new()
        } else {
            format!(" -> {}", rust_type(&f.ret))
        };
        format!("({}){ret}", ps.join(", "))
    };
    let field = |f: &Function| f.name.strip_prefix("scalpel_").unwrap_or(&f.name).to_string();
    rs.push_str("\n/// Every function of the header, for one build of the kernels.\n#[derive(Clone, Copy)]\npub struct Kernels {\n");
    for f in &functions {
        w(&mut rs, format!("    pub {}: unsafe extern \"C\" fn{},\n", field(f), sig(f)));
    }
    rs.push_str("}\n");
    for (module, cfg, prefix) in
        [("real", "#[cfg(feature = \"cuda\")]\n", "scalpel_"), ("mock", "", "scalpel_mock_")]
    {
        w(
            &mut rs,
            format!(
                "\n{cfg}mod {module} {{\n    #[allow(unused_imports)]\n    use super::*;\n    unsafe extern \"C\" {{\n"
            ),
        );
        for f in &functions {
            let link = format!("{prefix}{}", f.name.strip_prefix("scalpel_").unwrap_or(&f.name));
            w(&mut rs, format!("        #[link_name = \"{link}\"]\n        pub fn {}{};\n", f.name, sig(f)));
        }
        rs.push_str("    }\n}\n");
        let upper = module.to_uppercase();
        w(&mut rs, format!("{cfg}pub const {upper}: Kernels = Kernels {{\n"));
        for f in &functions {
            w(&mut rs, format!("    {}: {module}::{},\n", field(f), f.name));
        }
        rs.push_str("};\n");
    }
    for f in &functions {
        let ps: Vec<String> = f.params.iter().map(|p| c_type(&p.ty)).collect();
        let ps = if ps.is_empty() { "void".to_string() } else { ps.join(", ") };
        w(
            &mut cc,
            format!(
                "static_assert(std::is_same<decltype(&{}), {} (*)({ps})>::value, \"{}: signature\");\n",
                f.name,
                c_type(&f.ret),
                f.name
            ),
        );
    }
    Ok((rs, cc))
}

/// `#define scalpel_x scalpel_mock_x` for every function: the mock build's symbols.
pub fn mock_renames(h: &Header) -> String {
    let mut s = String::from(
        "// Generated by build.rs: the mock build's launchers get their own symbols.\n#pragma once\n",
    );
    for i in &h.items {
        if let Item::Function(f) = i {
            let _ = writeln!(
                s,
                "#define {} scalpel_mock_{}",
                f.name,
                f.name.strip_prefix("scalpel_").unwrap_or(&f.name)
            );
        }
    }
    s
}
