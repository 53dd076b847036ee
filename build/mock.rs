//! The kernels as host C++ for the mock device: each kernels/*.cu rewritten where a macro cannot
//! reach — `kernel<<<grid, block, smem, stream>>>(args)` becomes a call of `::mock::launch` (with
//! the kernel's `__launch_bounds__`, its name and the line), `__shared__` declarations become
//! `SCALPEL_MOCK_SHARED` (one array per block, poisoned at block start) and `extern __shared__`
//! arrays pointers to the block's dynamic shared memory. Comments are blanked and line breaks kept,
//! so `#line` maps every diagnostic and every mock report back to the .cu file and line.

use std::collections::HashMap;

/// The source with comments and string contents blanked (same length, same line breaks), so the
/// scans below never look inside them.
fn blank(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            for o in &mut out[i..end] {
                if *o != b'\n' {
                    *o = b' ';
                }
            }
            i = end;
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                out[i] = b' ';
                i += 1;
            }
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            i += 1;
            while i < b.len() && b[i] != q {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Index just past the bracket that closes the one at `open` (any of ( [ { <).
fn close_of(s: &[u8], open: usize) -> Result<usize, String> {
    let (o, c) = match s[open] {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        b'{' => (b'{', b'}'),
        b'<' => (b'<', b'>'),
        x => return Err(format!("no bracket at {open}: {:?}", x as char)),
    };
    let mut depth = 0;
    for (i, &x) in s.iter().enumerate().skip(open) {
        if x == o {
            depth += 1;
        } else if x == c {
            depth -= 1;
            if depth == 0 {
                return Ok(i + 1);
            }
        }
    }
    Err("unbalanced brackets".into())
}

/// Splits at commas outside brackets.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn find_word(s: &[u8], word: &str, from: usize) -> Option<usize> {
    let w = word.as_bytes();
    let mut i = from;
    while i + w.len() <= s.len() {
        if &s[i..i + w.len()] == w
            && (i == 0 || !is_ident(s[i - 1]))
            && (i + w.len() == s.len() || !is_ident(s[i + w.len()]))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Newlines in a span, so a replacement can keep the line count.
fn newlines(s: &[u8]) -> String {
    "\n".repeat(s.iter().filter(|&&c| c == b'\n').count())
}

fn text(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

/// One line of replacement for a span, keeping its line breaks at the end.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn rewrite(src: &str, path: &str) -> Result<String, String> {
    let s = blank(src);
    let at = |i: usize| format!("{path}:{}", s[..i].iter().filter(|&&c| c == b'\n').count() + 1);

    // Launch bounds by kernel name: `__launch_bounds__(N) name(`.
    let mut bounds: HashMap<String, String> = HashMap::new();
    let mut i = 0;
    while let Some(p) = find_word(&s, "__launch_bounds__", i) {
        let open = p + "__launch_bounds__".len();
        let close = close_of(&s, open).map_err(|e| format!("{}: {e}", at(p)))?;
        let value = text(&s[open + 1..close - 1]);
        let mut j = close;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        let start = j;
        while j < s.len() && is_ident(s[j]) {
            j += 1;
        }
        bounds.insert(text(&s[start..j]), value.trim().to_string());
        i = close;
    }

    // Edits as (start, end, replacement), applied back to front.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();

    // Launches.
    let mut i = 0;
    while let Some(p) = s[i..].windows(3).position(|w| w == b"<<<").map(|x| x + i) {
        // The kernel expression: an identifier, maybe with template arguments, ending at p.
        let mut j = p;
        while j > 0 && s[j - 1].is_ascii_whitespace() {
            j -= 1;
        }
        if j > 0 && s[j - 1] == b'>' {
            let mut depth = 0;
            loop {
                j -= 1;
                match s[j] {
                    b'>' => depth += 1,
                    b'<' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                if j == 0 {
                    return Err(format!("{}: unbalanced template arguments before <<<", at(p)));
                }
            }
        }
        let name_end = j;
        while j > 0 && (is_ident(s[j - 1]) || s[j - 1] == b':') {
            j -= 1;
        }
        let start = j;
        let name = text(&s[start..name_end]);
        if name.is_empty() {
            return Err(format!("{}: a launch without a kernel name", at(p)));
        }
        let expr = flat(&text(&s[start..p]));
        let cfg_end = s[p + 3..]
            .windows(3)
            .position(|w| w == b">>>")
            .map(|x| x + p + 3)
            .ok_or_else(|| format!("{}: <<< without >>>", at(p)))?;
        let cfg = text(&s[p + 3..cfg_end]);
        let mut k = cfg_end + 3;
        while k < s.len() && s[k].is_ascii_whitespace() {
            k += 1;
        }
        if k >= s.len() || s[k] != b'(' {
            return Err(format!("{}: a launch without its argument list", at(p)));
        }
        let args_end = close_of(&s, k).map_err(|e| format!("{}: {e}", at(p)))?;
        let args = text(&s[k + 1..args_end - 1]);
        let n_cfg = split_top(&cfg).len();
        if !(2..=4).contains(&n_cfg) {
            return Err(format!("{}: a launch configuration of {n_cfg} values", at(p)));
        }
        let bound =
            bounds.get(name.rsplit(':').next().unwrap_or(&name)).cloned().unwrap_or_else(|| "0".into());
        let args_part = if args.trim().is_empty() { String::new() } else { format!(", {}", args) };
        let replacement = format!(
            "::mock::launch({expr}, \"{expr}\", __FILE__, __LINE__, (unsigned)({bound}), ::mock::config({}){args_part}){}",
            flat(&cfg),
            newlines(&s[start..k])
        );
        edits.push((start, args_end, replacement));
        i = args_end;
    }

    // Shared memory declarations.
    let mut i = 0;
    while let Some(p) = find_word(&s, "__shared__", i) {
        let end = s[p..]
            .iter()
            .position(|&c| c == b';')
            .map(|x| x + p)
            .ok_or_else(|| format!("{}: no ';'", at(p)))?;
        // `extern` right before makes it the dynamic array.
        let mut b = p;
        while b > 0 && s[b - 1].is_ascii_whitespace() {
            b -= 1;
        }
        let is_extern = b >= 6 && &s[b - 6..b] == b"extern";
        let mut decl = text(&s[p + "__shared__".len()..end]);
        // __align__(N): the mock's buffers are aligned anyway.
        if let Some(a) = decl.find("__align__") {
            let open = a + decl[a..].find('(').ok_or_else(|| format!("{}: __align__ without (", at(p)))?;
            let close =
                open + decl[open..].find(')').ok_or_else(|| format!("{}: __align__ without )", at(p)))?;
            decl.replace_range(a..=close, "");
        }
        let mut parts = split_top(&decl).into_iter();
        let first = parts.next().ok_or_else(|| format!("{}: an empty __shared__ declaration", at(p)))?;
        let first = first.trim();
        let dims_at = first.find('[').unwrap_or(first.len());
        let head = first[..dims_at].trim_end();
        let name_at = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |x| x + 1);
        let (ty, name) = (head[..name_at].trim(), &head[name_at..]);
        if ty.is_empty() || name.is_empty() {
            return Err(format!("{}: cannot read the __shared__ declaration {first:?}", at(p)));
        }
        let mut out = String::new();
        if is_extern {
            if &first[dims_at..] != "[]" || parts.next().is_some() {
                return Err(format!("{}: extern __shared__ must declare one unsized array", at(p)));
            }
            out.push_str(&format!("{ty} *{name} = static_cast<{ty} *>(::mock::dynamic_shared());"));
        } else {
            let mut decls = vec![(name.to_string(), first[dims_at..].to_string())];
            for more in parts {
                let more = more.trim();
                let d = more.find('[').unwrap_or(more.len());
                decls.push((more[..d].trim().to_string(), more[d..].to_string()));
            }
            for (n, dims) in decls {
                out.push_str(&format!("SCALPEL_MOCK_SHARED({ty}, {n}, {});", flat(&dims)));
            }
        }
        out.push_str(&newlines(&s[p..end]));
        edits.push((if is_extern { b - 6 } else { p }, end + 1, out));
        i = end + 1;
    }

    edits.sort_by_key(|e| e.0);
    for w in edits.windows(2) {
        if w[0].1 > w[1].0 {
            return Err(format!("{}: overlapping rewrites", at(w[1].0)));
        }
    }
    let mut out = s.clone();
    for (a, b, r) in edits.into_iter().rev() {
        out.splice(a..b, r.into_bytes());
    }
    Ok(format!("#line 1 \"{path}\"\n{}", text(&out)))
}
