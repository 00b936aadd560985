//! The sort etcd 3.5 uses for sorted ranges: Go 1.16's `sort.Sort` (introsort: quicksort with
//! a median-of-three or median-of-nine pivot, heapsort past a depth limit, and for slices of at
//! most 12 elements a gap-6 shell pass followed by insertion sort). It is not stable, so the
//! order of equal elements (keys with the same version, revision or value) depends on the exact
//! sequence of comparisons and swaps: to return what etcd returns, tandem sorts the same way.
//! Descending order is etcd's `sort.Reverse`: the same algorithm with the comparison reversed.
//!
//! Written from the algorithm's description; `tests` below checks it sorts, and
//! `etcd-compat-tests/tests/fuzz_vs_etcd.rs` checks tie order against etcd 3.5.1.

/// Sorts `v` by `less` exactly as Go 1.16's `sort.Sort` does.
pub fn sort_by<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = v.len();
    let mut depth = 0;
    let mut i = n;
    while i > 0 {
        depth += 1;
        i >>= 1;
    }
    let mut s = Sorter { v, less };
    s.quick_sort(0, n, depth * 2);
}

/// [`sort_by`], or etcd's `sort.Sort(sort.Reverse(..))` when `descending`.
pub fn sort_ordered<T>(v: &mut [T], descending: bool, less: impl Fn(&T, &T) -> bool) {
    if descending {
        sort_by(v, |a, b| less(b, a));
    } else {
        sort_by(v, less);
    }
}

struct Sorter<'a, T, F> {
    v: &'a mut [T],
    less: F,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.v[i], &self.v[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.v.swap(i, j);
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    /// Restores the heap property below `root` in the heap `[lo, hi)` stored from `first`.
    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let first = a;
        let hi = b - a;
        let mut i = (hi as isize - 1) / 2;
        while i >= 0 {
            self.sift_down(i as usize, hi, first);
            i -= 1;
        }
        for i in (0..hi).rev() {
            self.swap(first, first + i);
            self.sift_down(0, i, first);
        }
    }

    /// Orders the three elements so that `v[m0] <= v[m1] <= v[m2]`.
    fn median_of_three(&mut self, m1: usize, m0: usize, m2: usize) {
        if self.less(m1, m0) {
            self.swap(m1, m0);
        }
        if self.less(m2, m1) {
            self.swap(m2, m1);
            if self.less(m1, m0) {
                self.swap(m1, m0);
            }
        }
    }

    /// Partitions `[lo, hi)` around a pivot; returns the bounds of the elements equal to it.
    fn do_pivot(&mut self, lo: usize, hi: usize) -> (usize, usize) {
        let m = (lo + hi) / 2;
        if hi - lo > 40 {
            let s = (hi - lo) / 8;
            self.median_of_three(lo, lo + s, lo + 2 * s);
            self.median_of_three(m, m - s, m + s);
            self.median_of_three(hi - 1, hi - 1 - s, hi - 1 - 2 * s);
        }
        self.median_of_three(lo, m, hi - 1);

        // v[lo] is the pivot; v[lo+1..a] < pivot, v[a..b] <= pivot, v[b..c] unexamined,
        // v[c..hi-1] > pivot, v[hi-1] >= pivot.
        let pivot = lo;
        let (mut a, mut c) = (lo + 1, hi - 1);
        while a < c && self.less(a, pivot) {
            a += 1;
        }
        let mut b = a;
        loop {
            while b < c && !self.less(pivot, b) {
                b += 1;
            }
            while b < c && self.less(pivot, c - 1) {
                c -= 1;
            }
            if b >= c {
                break;
            }
            self.swap(b, c - 1);
            b += 1;
            c -= 1;
        }
        // Few elements above the partition mean duplicates of the pivot: gather them.
        let mut protect = hi - c < 5;
        if !protect && hi - c < (hi - lo) / 4 {
            let mut dups = 0;
            if !self.less(pivot, hi - 1) {
                self.swap(c, hi - 1);
                c += 1;
                dups += 1;
            }
            if !self.less(b - 1, pivot) {
                b -= 1;
                dups += 1;
            }
            if !self.less(m, pivot) {
                self.swap(m, b - 1);
                b -= 1;
                dups += 1;
            }
            protect = dups > 1;
        }
        if protect {
            // v[a..b] unexamined, v[b..c] equal to the pivot.
            loop {
                while a < b && !self.less(b - 1, pivot) {
                    b -= 1;
                }
                while a < b && self.less(a, pivot) {
                    a += 1;
                }
                if a >= b {
                    break;
                }
                self.swap(a, b - 1);
                a += 1;
                b -= 1;
            }
        }
        self.swap(pivot, b - 1);
        (b - 1, c)
    }

    fn quick_sort(&mut self, mut a: usize, mut b: usize, mut max_depth: usize) {
        while b - a > 12 {
            if max_depth == 0 {
                self.heap_sort(a, b);
                return;
            }
            max_depth -= 1;
            let (mlo, mhi) = self.do_pivot(a, b);
            // Recurse into the smaller side, loop on the larger.
            if mlo - a < b - mhi {
                self.quick_sort(a, mlo, max_depth);
                a = mhi;
            } else {
                self.quick_sort(mhi, b, max_depth);
                b = mlo;
            }
        }
        if b - a > 1 {
            // A shell sort pass with gap 6, then insertion sort (at most 12 elements).
            for i in a + 6..b {
                if self.less(i, i - 6) {
                    self.swap(i, i - 6);
                }
            }
            self.insertion_sort(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_the_standard_library(mut v in prop::collection::vec(0u8..8, 0..200)) {
            let mut want = v.clone();
            want.sort();
            sort_by(&mut v, |a, b| a < b);
            prop_assert_eq!(v, want);
        }

        #[test]
        fn keeps_every_element(v in prop::collection::vec((0u8..4, any::<u16>()), 0..100)) {
            let mut got = v.clone();
            sort_by(&mut got, |a, b| a.0 < b.0);
            prop_assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
            let (mut a, mut b) = (v, got.clone());
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
        }
    }

    /// Small slices: the shell pass makes the order of equal elements differ from a stable
    /// sort (the source of etcd's tie order for 7 to 12 elements).
    #[test]
    fn the_gap_6_pass_reorders_equal_elements() {
        let mut v: Vec<(u8, char)> = vec![
            (1, 'a'),
            (0, 'b'),
            (0, 'c'),
            (0, 'd'),
            (0, 'e'),
            (0, 'f'),
            (0, 'g'),
        ];
        sort_by(&mut v, |a, b| a.0 < b.0);
        assert_eq!(v.iter().map(|e| e.1).collect::<String>(), "gbcdefa");
    }
}
