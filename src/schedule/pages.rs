//! The KV cache's pages as the scheduler hands them out: a free list over one pool, each page
//! counted by its holders, so every page comes back and a leak is a number that is not zero.

use crate::error::{Error, Result};

pub struct PagePool {
    free: Vec<u32>,
    holders: Vec<u32>,
}

impl PagePool {
    /// Pages 0..n, all free.
    pub fn new(n: usize) -> Self {
        PagePool { free: (0..n as u32).rev().collect(), holders: vec![0; n] }
    }

    pub fn total(&self) -> usize {
        self.holders.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn used(&self) -> usize {
        self.total() - self.free()
    }

    /// `n` free pages, or None (and nothing taken) when fewer are free.
    pub fn take(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let pages = self.free.split_off(self.free.len() - n);
        for &p in &pages {
            self.holders[p as usize] = 1;
        }
        Some(pages)
    }

    /// Gives back one hold on each page; a page nobody holds is free again.
    pub fn give_back(&mut self, pages: &[u32]) -> Result<()> {
        for &p in pages {
            let h = self.holders.get_mut(p as usize).filter(|h| **h > 0).ok_or_else(|| {
                Error::Invalid(format!("page {p} given back but not held (a scheduler bug)"))
            })?;
            *h -= 1;
            if *h == 0 {
                self.free.push(p);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_back_and_a_double_free_is_refused() {
        let mut pool = PagePool::new(4);
        let a = pool.take(3).unwrap();
        assert_eq!(pool.free(), 1);
        assert!(pool.take(2).is_none(), "more than is free");
        assert_eq!(pool.free(), 1, "a refused take takes nothing");
        pool.give_back(&a).unwrap();
        assert_eq!(pool.free(), 4);
        assert!(pool.give_back(&a[..1]).is_err());
    }
}
