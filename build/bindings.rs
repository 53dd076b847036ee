//! kernels/scalpel_kernels.h as Rust, through bindgen. bindgen (libclang) reads the header as the
//! compilers do and emits its constants, enums and structs, each struct with bindgen's layout
//! tests: compile-time assertions of its size, alignment and every field's offset as clang laid
//! it out. Its functions are then declared twice, once per build of the kernels — `real` (the
//! nvcc build, symbols `scalpel_*`, feature `cuda`) and `mock` (the mock device's build, whose
//! symbols mock_names.h renames `scalpel_mock_*`) — and gathered into `Kernels`, a table of
//! function pointers with one field per function (its name less `scalpel_`), filled from each
//! build (`REAL`, `MOCK`). The functions come only from what bindgen parsed, so one added to the
//! header appears in the table, in both fillings and in mock_names.h without touching Rust.
//!
//! build.rs and tests/bindings.rs both include this file.

use std::path::Path;

use syn::{ForeignItem, ForeignItemFn, Item, parse_quote};

/// What every function of the header is named; the table drops it, the mock build replaces it.
const PREFIX: &str = "scalpel_";
const MOCK_PREFIX: &str = "scalpel_mock_";

pub struct Bindings {
    /// The Rust module src/backend/cuda/ffi.rs includes.
    pub rust: String,
    /// `#define scalpel_x scalpel_mock_x` for every function, force-included by the mock build.
    pub mock_names: String,
}

/// The bindings of the C header at `header` (libclang must be loadable: see build.rs).
pub fn generate(header: &Path) -> Result<Bindings, String> {
    let path = header.to_str().ok_or("the header's path is not UTF-8")?;
    // Code for the crate's rust-version and edition. The version is named here: bindgen's
    // default is CARGO_PKG_RUST_VERSION read at run time, which a build script has and a test
    // does not.
    let msrv = env!("CARGO_PKG_RUST_VERSION");
    let minor = msrv.split('.').nth(1).and_then(|m| m.parse().ok());
    let target = minor
        .and_then(|m| bindgen::RustTarget::stable(m, 0).ok())
        .ok_or_else(|| format!("rust-version {msrv:?} is not a Rust release bindgen knows"))?;
    let raw = bindgen::Builder::default()
        .header(path)
        // Everything the header declares, and nothing from the headers it includes (stdint.h's
        // types become Rust's own integers).
        .allowlist_file(escape(path))
        // The enums are Rust enums, as the call sites name them (`ScalpelDType::SCALPEL_F32`).
        .default_enum_style(bindgen::EnumVariation::Rust { non_exhaustive: false })
        // `#define SCALPEL_INVALID_ARGUMENT 1` is compared with the launchers' int results.
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .derive_partialeq(true)
        .layout_tests(true)
        // The header's comments are plain C comments; they become the items' documentation.
        .clang_arg("-fparse-all-comments")
        .parse_callbacks(Box::new(PlainComments))
        .rust_target(target)
        .rust_edition(bindgen::RustEdition::Edition2024)
        // The file is parsed again below and printed once, by prettyplease.
        .formatter(bindgen::Formatter::None)
        .generate()
        .map_err(|e| format!("bindgen: {e}"))?
        .to_string();
    let file = syn::parse_file(&raw).map_err(|e| format!("bindgen's output does not parse: {e}"))?;

    let mut items = Vec::new();
    let mut functions = Vec::new();
    for item in file.items {
        match item {
            Item::ForeignMod(block) => {
                for f in block.items {
                    match f {
                        ForeignItem::Fn(f) => functions.push(f),
                        ForeignItem::Static(v) => {
                            return Err(format!("{}: the header declares launchers, not variables", v.ident));
                        }
                        _ => return Err("an extern item that is not a function".into()),
                    }
                }
            }
            other => items.push(other),
        }
    }
    let mut fields = Vec::new();
    for f in &functions {
        let name = f.sig.ident.to_string();
        let field = name.strip_prefix(PREFIX).ok_or_else(|| {
            format!("{name}: every function's name starts with {PREFIX} (the mock build renames it {MOCK_PREFIX}*)")
        })?;
        if f.sig.variadic.is_some() {
            return Err(format!("{name}: a variadic function has no place in the table"));
        }
        fields.push(syn::Ident::new(field, f.sig.ident.span()));
    }

    let table: Vec<syn::Field> = functions
        .iter()
        .zip(&fields)
        .map(|(f, field)| {
            let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));
            let (inputs, output) = (&f.sig.inputs, &f.sig.output);
            parse_quote! { #(#docs)* pub #field: unsafe extern "C" fn(#inputs) #output }
        })
        .collect();
    items.push(parse_quote! {
        /// Every function of the header, as one build of the kernels defines them.
        #[derive(Clone, Copy)]
        pub struct Kernels { #(#table),* }
    });
    let sets: [(syn::Ident, syn::Ident, &str, Option<syn::Attribute>); 2] = [
        (parse_quote!(real), parse_quote!(REAL), PREFIX, Some(parse_quote!(#[cfg(feature = "cuda")]))),
        (parse_quote!(mock), parse_quote!(MOCK), MOCK_PREFIX, None),
    ];
    for (module, constant, link_prefix, cfg) in sets {
        let cfg = cfg.as_slice();
        let decls = functions.iter().zip(&fields).map(|(f, field)| -> ForeignItemFn {
            let link = format!("{link_prefix}{field}");
            let sig = &f.sig;
            parse_quote! { #[link_name = #link] pub #sig; }
        });
        let names = functions.iter().map(|f| &f.sig.ident);
        items.push(parse_quote! {
            #(#cfg)*
            mod #module {
                #[allow(unused_imports)]
                use super::*;
                unsafe extern "C" { #(#decls)* }
            }
        });
        items.push(parse_quote! {
            #(#cfg)*
            pub const #constant: Kernels = Kernels { #(#fields: #module::#names),* };
        });
    }
    let rust = format!(
        "// Generated by build.rs (build/bindings.rs) from {path}: edit the header, not this file.\n\n{}",
        prettyplease::unparse(&syn::File { shebang: None, attrs: file.attrs, items })
    );

    let mut mock_names = format!(
        "// Generated by build.rs (build/bindings.rs) from {path}: the mock build's launchers get their \
         own symbols.\n#pragma once\n"
    );
    for (f, field) in functions.iter().zip(&fields) {
        mock_names.push_str(&format!("#define {} {MOCK_PREFIX}{field}\n", f.sig.ident));
    }
    Ok(Bindings { rust, mock_names })
}

/// The header's comments are plain text, not Markdown: rustdoc would read `x[i]` and `[rows, n]`
/// as links, `<` as HTML and stars as emphasis. Code spans stay as written.
#[derive(Debug)]
struct PlainComments;

impl bindgen::callbacks::ParseCallbacks for PlainComments {
    fn process_comment(&self, comment: &str) -> Option<String> {
        let mut out = String::with_capacity(comment.len());
        for (i, part) in comment.split('`').enumerate() {
            if i > 0 {
                out.push('`');
            }
            for c in part.chars() {
                if i % 2 == 0 && "\\[]<>*".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
        Some(out)
    }
}

/// `s` as a regular expression matching exactly itself (what `allowlist_file` takes).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
