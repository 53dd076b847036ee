//! Fonts found on the system: a list searched in order for each character, so Latin text comes
//! from the first font and CJK from a fallback that has it.

use std::path::PathBuf;
use std::sync::OnceLock;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};

use crate::Result;
use crate::error::Error;

/// Font files tried in order; $SCALPEL_FONTS (colon-separated) goes first.
const CANDIDATES: [&str; 9] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
];

pub struct Fonts {
    fonts: Vec<FontVec>,
}

static FONTS: OnceLock<std::result::Result<Fonts, String>> = OnceLock::new();

/// The system fonts, loaded once.
pub fn fonts() -> Result<&'static Fonts> {
    FONTS
        .get_or_init(|| {
            let mut paths: Vec<PathBuf> = std::env::var("SCALPEL_FONTS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default();
            paths.extend(CANDIDATES.iter().map(PathBuf::from));
            let mut fonts = Vec::new();
            for p in paths {
                let Ok(bytes) = std::fs::read(&p) else { continue };
                if let Ok(f) = FontVec::try_from_vec_and_index(bytes, 0) {
                    fonts.push(f);
                }
            }
            if fonts.is_empty() {
                Err("no font found for drawing text: install fonts-dejavu-core and fonts-wqy-microhei \
                     (scripts/setup.sh does) or set SCALPEL_FONTS to a .ttf/.ttc file"
                    .to_string())
            } else {
                Ok(Fonts { fonts })
            }
        })
        .as_ref()
        .map_err(|e| Error::Invalid(e.clone()))
}

impl Fonts {
    /// The font that has a glyph for `c` (the first font when none has: it draws a box).
    pub fn for_char(&self, c: char) -> &FontVec {
        self.fonts.iter().find(|f| f.glyph_id(c).0 != 0).unwrap_or(&self.fonts[0])
    }

    pub fn has_glyph(&self, c: char) -> bool {
        self.fonts.iter().any(|f| f.glyph_id(c).0 != 0)
    }

    /// Width in pixels of `text` at `size` px.
    pub fn width(&self, text: &str, size: f32) -> f32 {
        text.chars()
            .map(|c| self.for_char(c).as_scaled(PxScale::from(size)).h_advance(self.for_char(c).glyph_id(c)))
            .sum()
    }

    /// Ascent (above the baseline) at `size` px, from the first font.
    pub fn ascent(&self, size: f32) -> f32 {
        self.fonts[0].as_scaled(PxScale::from(size)).ascent()
    }
}
