//! Memory planning: every non-constant tensor and every node's scratch gets
//! an offset in one arena. Lifetimes come from the node order; tensors whose
//! lifetimes overlap never share bytes (greedy by size, best offset first).

use crate::ir::Graph;

/// Offsets in the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Per tensor: Some(offset) for arena tensors.
    pub offsets: Vec<Option<usize>>,
    /// Per node: (offset, len) of its scratch.
    pub scratch: Vec<(usize, usize)>,
    pub arena_size: usize,
}

struct Item {
    size: usize,
    first: usize,
    last: usize,
    slot: Slot,
}

enum Slot {
    Tensor(usize),
    Scratch(usize),
}

/// Plans the arena. `scratch[k]` is node k's scratch size in bytes.
pub fn plan(g: &Graph, scratch: &[usize]) -> MemoryPlan {
    let n_nodes = g.nodes.len();
    let end = n_nodes + 1;
    // Time 0 = before the first node; node k runs at time k + 1.
    let mut first = vec![usize::MAX; g.tensors.len()];
    let mut last = vec![0usize; g.tensors.len()];
    for &i in &g.inputs {
        first[i] = 0;
    }
    for (k, n) in g.nodes.iter().enumerate() {
        for &o in n.outputs.iter().flatten() {
            first[o] = first[o].min(k + 1);
            last[o] = last[o].max(k + 1);
        }
        for &i in n.inputs.iter().flatten() {
            last[i] = last[i].max(k + 1);
        }
    }
    for &o in &g.outputs {
        last[o] = end;
    }
    for &i in &g.inputs {
        // Inputs are written before the run; keep them for the whole run so
        // a caller can re-read them (and so batch loops can reuse them).
        last[i] = end;
    }
    let mut items: Vec<Item> = vec![];
    for (t, tensor) in g.tensors.iter().enumerate() {
        if tensor.is_const() || first[t] == usize::MAX {
            continue;
        }
        items.push(Item {
            size: tensor.byte_len().next_multiple_of(16),
            first: first[t],
            last: last[t],
            slot: Slot::Tensor(t),
        });
    }
    for (k, &s) in scratch.iter().enumerate() {
        if s > 0 {
            items.push(Item {
                size: s.next_multiple_of(16),
                first: k + 1,
                last: k + 1,
                slot: Slot::Scratch(k),
            });
        }
    }
    // Largest first; ties by first use for determinism.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[b]
            .size
            .cmp(&items[a].size)
            .then(items[a].first.cmp(&items[b].first))
            .then(a.cmp(&b))
    });
    let mut placed: Vec<(usize, usize, usize, usize)> = vec![]; // (offset, size, first, last)
    let mut offsets = vec![None; g.tensors.len()];
    let mut scr = vec![(0usize, 0usize); n_nodes];
    let mut arena = 0usize;
    for &i in &order {
        let it = &items[i];
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.2 <= it.last && it.first <= p.3)
            .map(|p| (p.0, p.0 + p.1))
            .collect();
        live.sort_unstable();
        // Smallest gap that fits, else after the last live block.
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0usize;
        for &(s, e) in &live {
            if s >= cursor + it.size {
                let gap = s - cursor;
                if best.is_none_or(|b| gap < b.0) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(e);
        }
        let off = best.map_or(cursor, |b| b.1);
        placed.push((off, it.size, it.first, it.last));
        arena = arena.max(off + it.size);
        match it.slot {
            Slot::Tensor(t) => offsets[t] = Some(off),
            Slot::Scratch(k) => scr[k] = (off, scratch[k]),
        }
    }
    MemoryPlan {
        offsets,
        scratch: scr,
        arena_size: arena,
    }
}
