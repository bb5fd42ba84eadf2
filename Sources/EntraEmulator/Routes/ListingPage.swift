/// One page of a Graph listing (`GET /applications`, `GET /servicePrincipals`), filled in sequence
/// order the way Graph pages: at most `top` items, `@odata.nextLink` when more match, and (with
/// `$count=true`) how many match in all, which means walking on past a full page.
struct ListingPage<Item> {
    let top: Int
    let counting: Bool
    private(set) var items: [Item] = []
    /// Sequence number of the last item on the page: the next page starts after it.
    private(set) var lastSeq: Int64
    private(set) var more = false
    private(set) var count = 0

    init(top: Int, after: Int64, counting: Bool) {
        self.top = top
        self.lastSeq = after
        self.counting = counting
    }

    /// Offers the next matching item. Returns false once the page is full and nothing more needs
    /// counting: the caller stops walking.
    mutating func offer(_ item: Item, seq: Int64) -> Bool {
        if items.count == top {
            more = true
            if !counting { return false }
        }
        if items.count < top {
            items.append(item)
            lastSeq = seq
        }
        count += 1
        return true
    }

    /// Walks a table in sequence order from `after`, a batch at a time (`batch(cursor)` returns
    /// the rows after `cursor`), offering every row `keep` accepts.
    mutating func scan(from after: Int64, batch: (Int64) throws -> [(seq: Int64, item: Item)], keep: (Item) -> Bool) rethrows {
        var cursor = after
        while true {
            let rows = try batch(cursor)
            if rows.isEmpty { return }
            for (seq, item) in rows {
                cursor = seq
                guard keep(item) else { continue }
                if !offer(item, seq: seq) { return }
            }
        }
    }
}
