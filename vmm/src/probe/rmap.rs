//! P1's walkers: find the VMAs of one mm meeting a span that rmap can still reach.
//!
//! They start where rmap and truncate start: every anon_vma on `KernelRoots::anon_vmas` (its VMA
//! list, `head` → `anon_vma_next`) and every address_space on `KernelRoots::mappings` (its i_mmap
//! interval tree). [`RmapWalk::walk_mem_map`] adds `--thorough`'s starting points, the `mapping` of
//! every frame's `Page`, which also reach structures dropped from the registries.
//!
//! Every link is checked on the way: registry and anon_vma lists by `next->prev`, VMAs by their
//! `anon_vma` back pointer, tree nodes by `parent`, colour and distinct children; the walked length
//! is compared with the structure's own count. A broken structure is recorded as an error and its
//! walk stops there; what was found before still counts.
//!
//! The back links are also the cycle detection, with no visited set (which would cost a hash per
//! VMA): in a list whose `prev` links are checked, the first object reached twice would need a
//! `prev` naming two different objects, and in a tree whose `parent` links are checked and whose
//! children differ, a node reached twice would need two parents. The step budget stays as the
//! backstop.

use std::collections::{BTreeSet, HashSet};

use mm_core::addr::PAGE_SIZE;
use mm_core::interval_tree::IntervalNode;
use mm_core::phys::{PageFlags, PAGE_MAPPING_ANON};

use super::engine::VmaInfo;
use super::guest_mem::{AddrHashState, AddrSet, GuestView, WalkError, WalkErrors};
use super::layout::{self, anon_vma, file, mapping, node, page, roots, tree_root, vma, word};
use super::UnlinkKind;

/// Deepest a red-black tree of 2^32 nodes can be, with slack: deeper means a corrupt tree.
const MAX_TREE_DEPTH: usize = 128;

/// The VMAs P1 looks for: those of `mm` whose range meets `[start, end)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VmaFilter {
    /// Guest address of the `MmStruct`.
    pub mm: u64,
    /// Start of the span.
    pub start: u64,
    /// End (exclusive) of the span.
    pub end: u64,
}

impl VmaFilter {
    fn matches(&self, v: &[u64]) -> bool {
        v[word(vma::VM_MM)] == self.mm
            && v[word(vma::VM_START)] < self.end
            && self.start < v[word(vma::VM_END)]
    }
}

/// One P1 search: the VMAs found and the structures that could not be walked.
pub(crate) struct RmapWalk<'v, 'a> {
    view: &'v mut GuestView<'a>,
    filter: VmaFilter,
    anon_done: AddrSet,
    files_done: AddrSet,
    seen: HashSet<(u64, bool), AddrHashState>,
    /// VMAs meeting the filter, in the order found, each once per rmap structure kind.
    pub found: Vec<VmaInfo>,
    /// Structures that could not be walked.
    pub errors: WalkErrors,
    /// anon_vmas walked.
    pub anon_vmas: u64,
    /// address_spaces walked.
    pub mappings: u64,
    /// VMAs read.
    pub vmas: u64,
    /// Neighbours read while checking index candidates' anon_vma lists.
    pub neighbours: u64,
}

impl<'v, 'a> RmapWalk<'v, 'a> {
    /// A search for `filter`'s VMAs through `view`.
    pub(crate) fn new(view: &'v mut GuestView<'a>, filter: VmaFilter) -> Self {
        Self {
            view,
            filter,
            anon_done: AddrSet::default(),
            files_done: AddrSet::default(),
            seen: HashSet::default(),
            found: Vec::new(),
            errors: WalkErrors::default(),
            anon_vmas: 0,
            mappings: 0,
            vmas: 0,
            neighbours: 0,
        }
    }

    /// Walks every anon_vma and address_space on the registries of the `KernelRoots` at `addr`.
    pub(crate) fn walk_roots(&mut self, addr: u64) {
        let r = match self.view.words::<{ roots::WORDS }>("KernelRoots", addr) {
            Ok(r) => r,
            Err(e) => return self.errors.push(e),
        };
        self.registry(
            "anon_vma",
            r[word(roots::ANON_VMAS)],
            r[word(roots::NR_ANON_VMAS)],
            anon_vma::ALL_NEXT,
            Self::anon_vma,
        );
        self.registry(
            "address_space",
            r[word(roots::MAPPINGS)],
            r[word(roots::NR_MAPPINGS)],
            mapping::ALL_NEXT,
            Self::address_space,
        );
    }

    /// Walks the anon_vma or address_space each of the `len` `Page`s at `mem_map` points to, as rmap
    /// would start from a frame: an anon `mapping` only while the page is mapped (Linux's
    /// `page_lock_anon_vma` checks `page_mapped` because the anon_vma may be gone otherwise), a
    /// file `mapping` always (the page cache keeps its address_space alive).
    pub(crate) fn walk_mem_map(&mut self, mem_map: u64, len: u64) {
        let frames = self.view.ram_frames();
        let len = if len > frames {
            self.errors.push(WalkError::Insane {
                what: "mem_map",
                addr: mem_map,
                detail: format!("{len} entries for {frames} frames of RAM; reading {frames}"),
            });
            frames
        } else {
            len
        };
        let mut anons = BTreeSet::new();
        let mut files = BTreeSet::new();
        let per_chunk = (PAGE_SIZE as usize / page::SIZE) as u64;
        let mut buf = vec![0u8; per_chunk as usize * page::SIZE];
        let mut i = 0;
        while i < len {
            let n = per_chunk.min(len - i);
            let addr = mem_map.wrapping_add(i * page::SIZE as u64);
            let bytes = &mut buf[..n as usize * page::SIZE];
            if let Err(e) = self
                .view
                .step("mem_map", addr)
                .and_then(|()| self.view.bytes("mem_map", addr, bytes))
            {
                return self.errors.push(e);
            }
            for p in bytes.chunks_exact(page::SIZE) {
                let field = |off: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&p[off..off + 8]);
                    u64::from_le_bytes(w)
                };
                let m = field(page::MAPPING);
                // A page table's `mapping` is its mm (the ptdesc), not an rmap structure.
                if m == 0 || PageFlags(field(page::FLAGS)).contains(PageFlags::PAGETABLE) {
                    continue;
                }
                if m & PAGE_MAPPING_ANON != 0 {
                    if field(page::MAPCOUNT) != 0 {
                        anons.insert(m & !PAGE_MAPPING_ANON);
                    }
                } else {
                    files.insert(m);
                }
            }
            i += n;
        }
        for av in anons {
            if self.view.spent() {
                return;
            }
            self.anon_vma(av);
        }
        for m in files {
            if self.view.spent() {
                return;
            }
            self.address_space(m);
        }
    }

    /// Visits each object on a registry list (`ListLink` at `next_off`, `prev` right after) as
    /// the list is checked, so a registry longer than the step budget costs no more than the
    /// budget.
    fn registry(
        &mut self,
        what: &'static str,
        head: u64,
        count: u64,
        next_off: usize,
        visit: fn(&mut Self, u64),
    ) {
        let (mut obj, mut prev, mut n) = (head, 0, 0u64);
        while obj != 0 {
            let step = (|| {
                self.view.step(what, obj)?;
                let bad = WalkError::BadAddress { what, addr: obj };
                let base = obj.checked_add(next_off as u64).ok_or(bad.clone())?;
                let [next, back] = self.view.words::<2>(what, base).map_err(|_| bad)?;
                if back != prev {
                    return Err(WalkError::BrokenLink {
                        what,
                        addr: obj,
                        link: "all.prev",
                        found: back,
                        expected: prev,
                    });
                }
                Ok(next)
            })();
            match step {
                Ok(next) => {
                    visit(self, obj);
                    n += 1;
                    (prev, obj) = (obj, next);
                }
                Err(e) => return self.errors.push(e),
            }
        }
        if n != count {
            self.errors.push(WalkError::Insane {
                what: "KernelRoots",
                addr: head,
                detail: format!("{what} registry holds {n} but counts {count}"),
            });
        }
    }

    /// Walks the VMA list of the anon_vma at `av` (once per search).
    pub(crate) fn anon_vma(&mut self, av: u64) {
        if !self.anon_done.insert(av) {
            return;
        }
        self.anon_vmas += 1;
        if let Err(e) = self.anon_vma_list(av) {
            self.errors.push(e);
        }
    }

    fn anon_vma_list(&mut self, av: u64) -> Result<(), WalkError> {
        let a = self.view.words::<{ anon_vma::WORDS }>("anon_vma", av)?;
        let count = a[word(anon_vma::NR_VMAS)];
        let (mut v, mut prev, mut n) = (a[word(anon_vma::HEAD)], 0, 0u64);
        while v != 0 {
            self.view.step("VMA", v)?;
            let w = self.read_vma_head(v)?;
            let link = |link, found, expected| WalkError::BrokenLink {
                what: "VMA",
                addr: v,
                link,
                found,
                expected,
            };
            if w[word(vma::ANON_VMA_PREV)] != prev {
                return Err(link("anon_vma_prev", w[word(vma::ANON_VMA_PREV)], prev));
            }
            if w[word(vma::ANON_VMA)] != av {
                return Err(link("anon_vma", w[word(vma::ANON_VMA)], av));
            }
            if n == count {
                return Err(WalkError::Insane {
                    what: "anon_vma",
                    addr: av,
                    detail: format!("list goes on past nr_vmas ({count}) at VMA {v:#x}"),
                });
            }
            self.consider(v, &w, UnlinkKind::Anon);
            n += 1;
            (prev, v) = (v, w[word(vma::ANON_VMA_NEXT)]);
        }
        if n != count {
            return Err(WalkError::Insane {
                what: "anon_vma",
                addr: av,
                detail: format!("list holds {n} VMAs but nr_vmas is {count}"),
            });
        }
        Ok(())
    }

    /// Walks the i_mmap tree of the address_space at `m` (once per search).
    pub(crate) fn address_space(&mut self, m: u64) {
        if !self.files_done.insert(m) {
            return;
        }
        self.mappings += 1;
        if let Err(e) = self.i_mmap(m) {
            self.errors.push(e);
        }
    }

    /// Every node of the tree, depth first. The span is in virtual addresses and the tree is keyed
    /// by file offset, which differs per VMA, so no subtree can be skipped: this reads every VMA
    /// mapping the file.
    fn i_mmap(&mut self, m: u64) -> Result<(), WalkError> {
        let m_words = self.view.words::<{ mapping::WORDS }>("address_space", m)?;
        let root = m_words[word(mapping::I_MMAP + tree_root::ROOT)];
        let count = m_words[word(mapping::I_MMAP + tree_root::COUNT)];
        let mut stack = vec![(root, 0u64, 0usize)];
        let mut n = 0u64;
        let node_word = |off: usize| word(vma::SHARED + off);
        while let Some((nd, parent, depth)) = stack.pop() {
            if nd == 0 {
                continue;
            }
            self.view.step("i_mmap node", nd)?;
            if depth > MAX_TREE_DEPTH {
                return Err(WalkError::Insane {
                    what: "i_mmap node",
                    addr: nd,
                    detail: format!("deeper than {MAX_TREE_DEPTH} in address_space {m:#x}"),
                });
            }
            let owner = nd
                .checked_sub(vma::SHARED as u64)
                .ok_or(WalkError::BadAddress {
                    what: "i_mmap node",
                    addr: nd,
                })?;
            let w = self.read_vma(owner)?;
            let link = |link, found, expected| WalkError::BrokenLink {
                what: "i_mmap node",
                addr: nd,
                link,
                found,
                expected,
            };
            if w[node_word(node::PARENT)] != parent {
                return Err(link("parent", w[node_word(node::PARENT)], parent));
            }
            let color = w[node_word(node::COLOR)];
            if color != IntervalNode::RED && color != IntervalNode::BLACK {
                return Err(link("color", color, IntervalNode::BLACK));
            }
            let (left, right) = (w[node_word(node::LEFT)], w[node_word(node::RIGHT)]);
            if left != 0 && left == right {
                return Err(link("right", right, 0));
            }
            if n == count {
                return Err(WalkError::Insane {
                    what: "address_space",
                    addr: m,
                    detail: format!("i_mmap goes on past its count ({count}) at node {nd:#x}"),
                });
            }
            self.consider(owner, &w, UnlinkKind::File);
            n += 1;
            stack.push((right, nd, depth + 1));
            stack.push((left, nd, depth + 1));
        }
        if n != count {
            return Err(WalkError::Insane {
                what: "address_space",
                addr: m,
                detail: format!("i_mmap holds {n} VMAs but counts {count}"),
            });
        }
        Ok(())
    }

    /// Checks one candidate from the VMA index: if it is a VMA of the mm meeting the span, whether
    /// its anon_vma list reaches it (walking `anon_vma_prev` back to the list head) and whether its
    /// file's i_mmap tree does (walking `parent` up to the tree's root). Costs the VMA's position
    /// in its anon_vma list plus its depth in the tree, not the number of VMAs.
    pub(crate) fn candidate(&mut self, v: u64) {
        let w = match self.read_vma(v) {
            Ok(w) => w,
            Err(e) => return self.errors.push(e),
        };
        if !self.filter.matches(&w) {
            return;
        }
        match self.on_anon_vma(v, &w) {
            Ok(true) => self.consider(v, &w, UnlinkKind::Anon),
            Ok(false) => {}
            Err(e) => self.errors.push(e),
        }
        match self.in_i_mmap(v, &w) {
            Ok(true) => self.consider(v, &w, UnlinkKind::File),
            Ok(false) => {}
            Err(e) => self.errors.push(e),
        }
    }

    /// Whether VMA `v` (words `w`) is on its anon_vma's list, reached from the list's head.
    fn on_anon_vma(&mut self, v: u64, w: &[u64; vma::WORDS]) -> Result<bool, WalkError> {
        let av = w[word(vma::ANON_VMA)];
        if av == 0 {
            return Ok(false);
        }
        let a = self.view.words::<{ anon_vma::WORDS }>("anon_vma", av)?;
        let (head, count) = (a[word(anon_vma::HEAD)], a[word(anon_vma::NR_VMAS)]);
        let (mut cur, mut prev, mut n) = (v, w[word(vma::ANON_VMA_PREV)], 0u64);
        while prev != 0 {
            self.view.step("VMA", prev)?;
            self.neighbours += 1;
            n += 1;
            if n >= count {
                return Err(WalkError::Insane {
                    what: "anon_vma",
                    addr: av,
                    detail: format!("VMA {v:#x} is more than nr_vmas ({count}) from the head"),
                });
            }
            let p = self.read_vma_head(prev)?;
            if p[word(vma::ANON_VMA_NEXT)] != cur || p[word(vma::ANON_VMA)] != av {
                // The neighbour does not link back: `cur` is not on the list through it.
                return Ok(false);
            }
            (cur, prev) = (prev, p[word(vma::ANON_VMA_PREV)]);
        }
        Ok(head == cur)
    }

    /// Whether VMA `v` (words `w`) is in its file's i_mmap tree, reached from the tree's root.
    fn in_i_mmap(&mut self, v: u64, w: &[u64; vma::WORDS]) -> Result<bool, WalkError> {
        let f = w[word(vma::VM_FILE)];
        let color = w[word(vma::SHARED + node::COLOR)];
        if f == 0 || (color != IntervalNode::RED && color != IntervalNode::BLACK) {
            return Ok(false);
        }
        let m = self
            .view
            .word("file", f.wrapping_add(file::F_MAPPING as u64))?;
        let root_at = m.wrapping_add((mapping::I_MMAP + tree_root::ROOT) as u64);
        let root = self.view.word("address_space", root_at)?;
        let mut nd = v.wrapping_add(vma::SHARED as u64);
        let mut parent = w[word(vma::SHARED + node::PARENT)];
        let mut depth = 0;
        while parent != 0 {
            self.view.step("i_mmap node", parent)?;
            depth += 1;
            if depth > MAX_TREE_DEPTH {
                return Err(WalkError::Insane {
                    what: "i_mmap node",
                    addr: nd,
                    detail: format!("more than {MAX_TREE_DEPTH} ancestors"),
                });
            }
            let [left, right, up] = self.view.words::<3>("i_mmap node", parent)?;
            if left != nd && right != nd {
                // The parent does not link back: the node is not in the tree through it.
                return Ok(false);
            }
            (nd, parent) = (parent, up);
        }
        Ok(root == nd)
    }

    fn read_vma(&mut self, v: u64) -> Result<[u64; vma::WORDS], WalkError> {
        self.vmas += 1;
        self.view.words::<{ vma::WORDS }>("VMA", v)
    }

    /// The first words of a VMA, through its anon_vma links (all the list walk needs).
    fn read_vma_head(&mut self, v: u64) -> Result<[u64; vma::ANON_WORDS], WalkError> {
        self.vmas += 1;
        self.view.words::<{ vma::ANON_WORDS }>("VMA", v)
    }

    fn consider(&mut self, addr: u64, w: &[u64], via: UnlinkKind) {
        if self.found.len() == MAX_FOUND {
            // Enough to tell the bug; a guest laying out more would only grow the VMM.
            return;
        }
        if self.filter.matches(w) && self.seen.insert((addr, via == UnlinkKind::Anon)) {
            self.found.push(VmaInfo {
                addr,
                start: w[word(vma::VM_START)],
                end: w[word(vma::VM_END)],
                flags: w[word(vma::VM_FLAGS)],
                via,
            });
        }
    }
}

/// VMAs one search reports at most (each becomes a P1 violation).
pub(crate) const MAX_FOUND: usize = 64;

// Layout sanity the walkers rely on: a registry link is `next` then `prev`.
const _: () = {
    assert!(anon_vma::ALL_PREV == anon_vma::ALL_NEXT + 8);
    assert!(mapping::ALL_PREV == mapping::ALL_NEXT + 8);
    assert!(layout::vma::SHARED + node::COLOR < layout::vma::WORDS * 8);
    assert!(node::LEFT == 0 && node::RIGHT == 8 && node::PARENT == 16);
};
