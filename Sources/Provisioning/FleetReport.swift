import EntraCrypto
import Foundation
import KeyRollPrimitives

/// The fleet report: one self-contained HTML file (inline CSS, SVG and a little JavaScript; no
/// network) that reads at 10,000 apps as well as at 10.
///
/// 1. **Summary**: apps per condition, and a histogram of time to the cliff by week for the next 90
///    days, with the past-cliff and bootstrap-not-rolled buckets in red.
/// 2. **At risk**: every app an operator must act on, ordered by time to the cliff (past the cliff
///    first), each with the command that fixes it.
/// 3. **All applications**: searchable, sortable, paged; selecting one draws its credentials on a
///    timeline.
///
/// The rules that pick and order the rows (``atRisk(_:)``, ``histogram(_:)``) are pure and tested on
/// their own; the page only draws them.
public enum FleetReport {
    /// One app an operator must act on, and what to run.
    public struct RiskRow: Sendable, Equatable {
        public var name: String
        public var appId: String
        public var condition: String
        /// Seconds to the cliff (negative or nil: past it).
        public var timeToCliff: TimeInterval?
        public var fix: String
    }

    /// The apps to act on: past the cliff, drift, bootstrap not rolled, expiring, or with a stale
    /// replica; ordered by time to the cliff, the ones past it first.
    public static func atRisk(_ a: FleetAudit) -> [RiskRow] {
        var rows: [RiskRow] = []
        for app in a.apps where app.managed {
            let ttc = app.cliff.map { $0.timeIntervalSince(a.generatedAt) }
            let file = BundleName.fileName(for: app.name)
            let store = "/var/lib/keyroll/stores/" + String(file.dropLast(5))
            switch app.worst {
            case .pastCliff:
                rows.append(RiskRow(name: app.name, appId: app.appId, condition: "past-cliff", timeToCliff: ttc,
                                    fix: "keyroll rebootstrap --app \(app.appId) --out \(file) --reason \"past its cliff\""))
            case .drift:
                let foreign = app.credentials.first { $0.finding == .drift }
                let flag = foreign?.kind == "Password" ? "" : " --cert"
                rows.append(RiskRow(name: app.name, appId: app.appId, condition: "drift", timeToCliff: ttc,
                                    fix: "review, then: az ad app credential delete --id \(app.appId) --key-id \(foreign?.keyId ?? "KEY_ID")\(flag)"))
            case .bootstrapNotRolled:
                rows.append(RiskRow(name: app.name, appId: app.appId, condition: "bootstrap-not-rolled", timeToCliff: ttc,
                                    fix: "on its host: keyroll import --bundle \(file) --store \(store) && keyroll roll --store \(store)"))
            case .expiringSoon:
                rows.append(RiskRow(name: app.name, appId: app.appId, condition: "expiring-soon", timeToCliff: ttc,
                                    fix: "on its host: keyroll status --store \(store), then keyroll roll --store \(store)"))
            case .healthy, .leftovers, .unmanaged:
                break
            }
            for r in app.staleReplicas {
                rows.append(RiskRow(name: "\(app.name) \(r.replica)", appId: app.appId, condition: "stale-replica",
                                    timeToCliff: r.cliff.map { $0.timeIntervalSince(a.generatedAt) }, fix: r.retireCommand ?? ""))
            }
        }
        return rows.sorted { ($0.timeToCliff ?? -.infinity, $0.name) < ($1.timeToCliff ?? -.infinity, $1.name) }
    }

    /// Time to the cliff of the managed apps, by week, over the next 90 days (13 buckets: days
    /// 0–6, 7–13, …, 84–90), with the past-cliff and bootstrap-not-rolled apps counted apart.
    public struct Histogram: Sendable, Equatable {
        public var pastCliff = 0
        public var bootstrapNotRolled = 0
        public var weeks = [Int](repeating: 0, count: 13)
        /// Managed apps whose cliff is more than 90 days away.
        public var later = 0
    }

    public static func histogram(_ a: FleetAudit) -> Histogram {
        var h = Histogram()
        for app in a.apps where app.managed {
            if app.worst == .pastCliff { h.pastCliff += 1; continue }
            if app.worst == .bootstrapNotRolled { h.bootstrapNotRolled += 1; continue }
            guard let cliff = app.cliff else { continue }
            let days = cliff.timeIntervalSince(a.generatedAt) / 86_400
            if days > 90 { h.later += 1 } else { h.weeks[min(12, max(0, Int(days / 7)))] += 1 }
        }
        return h
    }

    // MARK: rendering

    /// At-risk rows drawn in the page (closest cliffs first); the rest are a search away in the full
    /// table. Keeps a 10,000-app report loading in well under 2 s.
    public static let maximumRiskRows = 300

    public static func html(_ a: FleetAudit) -> String {
        let counts = a.counts
        let order: [AppCondition] = [.pastCliff, .drift, .bootstrapNotRolled, .expiringSoon, .leftovers, .healthy, .unmanaged]
        let cards = order.map { c in
            "<div class=\"card \(c.rawValue)\"><b id=\"count-\(c.rawValue)\">\(counts[c] ?? 0)</b><span>\(c.rawValue)</span></div>"
        }.joined() + "<div class=\"card stale\"><b id=\"count-stale-replicas\">\(a.staleReplicas)</b><span>stale replicas</span></div>"
        let risks = atRisk(a)
        let shownRisks = risks.prefix(maximumRiskRows)
        let riskRows = shownRisks.map { r in
            "<tr class=\"\(r.condition)\"><td>\(escape(r.name))</td><td>\(r.condition)</td><td>\(days(r.timeToCliff))</td><td><code>\(escape(r.fix))</code></td></tr>"
        }.joined(separator: "\n")
        let more = risks.count > shownRisks.count ? "<p>… and \(risks.count - shownRisks.count) more: search the table below, or <code>keyroll audit --csv</code>.</p>" : ""
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>KeyRoll fleet report</title>
            <style>\(css)</style></head>
            <body data-apps="\(a.apps.count)" data-at-risk="\(risks.count)">
            <h1>KeyRoll fleet report</h1>
            <p class="meta">Generated \(UTCTime.iso(a.generatedAt)) · \(a.apps.count) applications · expiring means within \(Int(a.expiringWithinDays)) days · \(escape(AuditReport.summary(a)))</p>
            <section id="summary"><h2>Summary</h2><div class="cards">\(cards)</div>
            <h3>Time to the cliff, next 90 days, by week</h3>
            \(histogramSVG(histogram(a)))
            </section>
            <section id="at-risk"><h2>At risk: \(risks.count) to act on, closest cliff first</h2>
            <table class="risk"><thead><tr><th>Application</th><th>Condition</th><th>Cliff in</th><th>Fix</th></tr></thead><tbody>
            \(riskRows)
            </tbody></table>\(more)
            </section>
            <section id="all"><h2>All applications</h2>
            <p><input id="search" type="search" placeholder="Search name, app id, condition…" autocomplete="off"> <span id="found"></span>
            <button id="prev" type="button">‹ previous</button> <span id="page"></span> <button id="next" type="button">next ›</button></p>
            <div id="timeline"><p>Select an application to see its credentials on a timeline.</p></div>
            <table id="apps"><thead><tr><th data-key="0">Application</th><th data-key="1">App ID</th><th data-key="2">Condition</th><th data-key="3">Cliff in</th><th data-key="4">Credentials</th><th data-key="5">Replicas</th></tr></thead><tbody></tbody></table>
            </section>
            <script type="application/json" id="data">\(dataJSON(a))</script>
            <script>\(script)</script>
            </body></html>
            """
    }

    static func days(_ t: TimeInterval?) -> String {
        guard let t else { return "past" }
        return t < 0 ? "past" : String(format: "%.1f d", t / 86_400)
    }

    static func histogramSVG(_ h: Histogram) -> String {
        let bars: [(String, Int, Bool)] = [("past cliff", h.pastCliff, true), ("bootstrap", h.bootstrapNotRolled, true)]
            + h.weeks.enumerated().map { ("\($0.offset * 7)–\(min(90, $0.offset * 7 + 6)) d", $0.element, false) }
        let maxCount = max(1, bars.map(\.1).max() ?? 1)
        let barW = 52, gap = 8, chartH = 140, top = 20
        let width = bars.count * (barW + gap) + 20
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"histogram\" width=\"\(width)\" height=\"\(chartH + top + 40)\" role=\"img\" aria-label=\"Apps by weeks to their cliff\">"
        for (i, (label, count, red)) in bars.enumerated() {
            let x = 10 + i * (barW + gap)
            let height = count == 0 ? 0 : max(2, Int(Double(count) / Double(maxCount) * Double(chartH)))
            let y = top + chartH - height
            svg += "<rect class=\"bar\(red ? " red" : "")\" data-count=\"\(count)\" x=\"\(x)\" y=\"\(y)\" width=\"\(barW)\" height=\"\(height)\" fill=\"\(red ? "#c62828" : (i < 4 ? "#f07f13" : "#5f8fd0"))\"><title>\(label): \(count)</title></rect>"
            svg += "<text x=\"\(x + barW / 2)\" y=\"\(y - 4)\" text-anchor=\"middle\">\(count)</text>"
            svg += "<text x=\"\(x + barW / 2)\" y=\"\(top + chartH + 16)\" text-anchor=\"middle\" class=\"axis\">\(label)</text>"
        }
        svg += "</svg>"
        return svg + "<p class=\"meta\">\(h.later) more managed apps reach their cliff after 90 days.</p>"
    }

    /// The table's data: one array per app, `<` escaped so no value can close the script element.
    static func dataJSON(_ a: FleetAudit) -> String {
        let apps: [JSONValue] = a.apps.map { app in
            .array([
                .string(app.name), .string(app.appId), .string(app.worst.rawValue),
                app.cliff.map { .int(Int64($0.timeIntervalSince(a.generatedAt))) } ?? .null,
                .int(Int64(app.credentials.count)),
                .array(app.replicas.map { .array([.string($0.replica.rawValue), .string($0.condition.rawValue)]) }),
                .array(app.credentials.map { c in
                    .array([.string(c.displayName ?? c.keyId), c.start.map { .int(Int64($0.timeIntervalSince(a.generatedAt))) } ?? .null,
                            c.end.map { .int(Int64($0.timeIntervalSince(a.generatedAt))) } ?? .null, .string(c.finding.rawValue)])
                }),
            ])
        }
        let text = String(decoding: JSONValue.array(apps).serialized(), as: UTF8.self)
        return text.replacingOccurrences(of: "<", with: "\\u003c").replacingOccurrences(of: "\u{2028}", with: "\\u2028").replacingOccurrences(of: "\u{2029}", with: "\\u2029")
    }

    static func escape(_ s: String) -> String { AuditReport.escape(s) }

    static let css = """
        body{font:14px/1.4 -apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
        h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd} h3{font-size:14px;color:#555}
        .meta{color:#666;font-size:12px}
        .cards{display:flex;flex-wrap:wrap;gap:10px}
        .card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px;background:#fafafa}
        .card b{display:block;font-size:24px} .card span{color:#555;font-size:12px}
        .card.past-cliff,.card.bootstrap-not-rolled{border-color:#c62828;background:#fde7e7} .card.drift{background:#fff0f0}
        .card.expiring-soon{background:#fff3e6} .card.healthy{background:#eaf6ee}
        svg text{font:11px sans-serif;fill:#333} svg text.axis{fill:#666;font-size:10px}
        table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
        th[data-key]{cursor:pointer;user-select:none} th[data-key]:hover{background:#f3f3f3}
        tr.past-cliff td{background:#fde7e7} tr.drift td{background:#fff0f0} tr.bootstrap-not-rolled td{background:#fff8e1}
        tr.expiring-soon td{background:#fff3e6} tr.stale-replica td{background:#f1f1f1}
        table.risk{table-layout:fixed} table.risk th:nth-child(1){width:16%} table.risk th:nth-child(2){width:12%} table.risk th:nth-child(3){width:7%} table.risk code{font-size:12px;white-space:pre-wrap;word-break:break-all}
        #apps tbody tr{cursor:pointer} #apps tbody tr:hover td{background:#eef4ff} #apps tr.selected td{background:#dbe7ff}
        #search{width:320px;padding:4px}
        #apps tr.replica td{font-size:12px;color:#555;border-bottom:1px dotted #eee} td.indent{padding-left:24px} #apps tr.replica.stale td{background:#f1f1f1;color:#888}
        #timeline{margin:8px 0;border:1px solid #ddd;border-radius:6px;padding:8px;min-height:40px;position:sticky;top:0;background:#fff;z-index:1}
        .sub{color:#777;font-size:12px}
        """

    static let script = """
        (function(){
        var t0=performance.now();
        var data=JSON.parse(document.getElementById('data').textContent);
        var rows=data, page=0, per=100, sortKey=3, sortDir=1;
        var body=document.querySelector('#apps tbody'), search=document.getElementById('search');
        var rank={'past-cliff':0,'drift':1,'bootstrap-not-rolled':2,'expiring-soon':3,'leftovers':4,'healthy':5,'unmanaged':6};
        function days(s){return s===null?'past':(s<0?'past':(s/86400).toFixed(1)+' d');}
        function val(a,k){if(k===3)return a[3]===null?-1e15:a[3]; if(k===2)return rank[a[2]]; if(k===4)return a[4]; if(k===5)return a[5].length; return String(a[k]).toLowerCase();}
        function esc(s){return String(s).replace(/[&<>"]/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];});}
        function apply(){
          var q=search.value.trim().toLowerCase();
          rows=q?data.filter(function(a){return (a[0]+' '+a[1]+' '+a[2]+' '+a[5].map(function(r){return r.join(' ');}).join(' ')).toLowerCase().indexOf(q)>=0;}):data.slice();
          rows.sort(function(x,y){var a=val(x,sortKey),b=val(y,sortKey);return (a<b?-1:a>b?1:0)*sortDir;});
          page=0; draw();
        }
        function draw(){
          var pages=Math.max(1,Math.ceil(rows.length/per)), html=[];
          rows.slice(page*per,page*per+per).forEach(function(a,i){
            var reps=a[5].length?a[5].length+' ('+a[5].filter(function(r){return r[1]!=='healthy';}).map(function(r){return r[0]+': '+r[1];}).join(', ')+')':'';
            html.push('<tr class="app '+a[2]+'" data-i="'+(page*per+i)+'"><td>'+esc(a[0])+'</td><td><code>'+a[1]+'</code></td><td>'+a[2]+'</td><td>'+days(a[3])+'</td><td>'+a[4]+'</td><td>'+esc(reps)+'</td></tr>');
            a[5].forEach(function(r){html.push('<tr class="replica '+r[1]+'" data-i="'+(page*per+i)+'"><td class="indent">└ replica '+esc(r[0])+'</td><td></td><td>'+r[1]+'</td><td></td><td></td><td></td></tr>');});
          });
          body.innerHTML=html.join('');
          document.getElementById('found').textContent=rows.length+' of '+data.length;
          document.getElementById('page').textContent='page '+(page+1)+' of '+pages;
        }
        function timeline(a){
          var w=900,left=260,rowH=18,n=Math.max(1,a[6].length),h=n*rowH+50,from=-60*86400,to=400*86400;
          function x(s){return left+Math.max(0,Math.min(1,(s-from)/(to-from)))*(w-left-10);}
          var colors={'healthy':'#2e9d5b','bootstrap-not-rolled':'#e0a100','expiring-soon':'#f07f13','expired-leftover':'#9aa0a6','not-yet-valid':'#7aa7e0','drift':'#c62828','unmanaged':'#5f6bbf'};
          var stale={};a[5].forEach(function(r){if(r[1]==='stale')stale[r[0]]=true;});
          function label(c){var n=String(c[0]).replace(/^CN=/,''),at=n.lastIndexOf('@'),rep=at>0?n.slice(at+1):'';
            var base=n.indexOf('keyroll-bootstrap')===0?'bootstrap':(n.indexOf('keyroll-')===0?'own key':n.slice(0,32));
            return (rep?'replica '+rep+' · ':'')+base+(stale[rep]?' (stale)':'');}
          var s='<svg xmlns="http://www.w3.org/2000/svg" width="'+w+'" height="'+h+'">';
          for(var m=0;m<=15;m+=1){var d=m*30*86400-60*86400;if(d>to)break;s+='<line x1="'+x(d)+'" y1="10" x2="'+x(d)+'" y2="'+(h-25)+'" stroke="#eee"/>';
            if(m%2===0&&d!==0)s+='<text x="'+(x(d)+2)+'" y="'+(h-10)+'" class="axis">'+(d>0?'+':'')+Math.round(d/86400)+' d</text>';}
          a[6].forEach(function(c,i){var y=14+i*rowH,x1=x(c[1]===null?from:c[1]),x2=Math.max(x(c[2]===null?to:c[2]),x1+2),rep=/@([a-z0-9-]+)$/.exec(c[0]);
            var fill=rep&&stale[rep[1]]?'#9aa0a6':(colors[c[3]]||'#999');
            s+='<text x="4" y="'+(y+11)+'">'+esc(label(c))+'</text><rect x="'+x1+'" y="'+(y+2)+'" width="'+(x2-x1)+'" height="12" rx="2" fill="'+fill+'"><title>'+esc(c[0])+': '+c[3]+'</title></rect>';});
          if(a[3]!==null)s+='<line x1="'+x(a[3])+'" y1="8" x2="'+x(a[3])+'" y2="'+(h-25)+'" stroke="#000" stroke-width="2"/>';
          s+='<line x1="'+x(0)+'" y1="8" x2="'+x(0)+'" y2="'+(h-25)+'" stroke="#c62828" stroke-dasharray="4 3"/><text x="'+(x(0)+3)+'" y="'+(h-10)+'" fill="#c62828">now</text></svg>';
          document.getElementById('timeline').innerHTML='<h3>'+esc(a[0])+' <span class="sub">'+a[1]+' · '+a[2]+' · cliff in '+days(a[3])+' (black line)</span></h3>'+s;
        }
        search.addEventListener('input',apply);
        document.getElementById('prev').addEventListener('click',function(){if(page>0){page--;draw();}});
        document.getElementById('next').addEventListener('click',function(){if((page+1)*per<rows.length){page++;draw();}});
        document.querySelectorAll('#apps th[data-key]').forEach(function(th){th.addEventListener('click',function(){var k=+th.dataset.key;sortDir=(k===sortKey)?-sortDir:1;sortKey=k;apply();});});
        body.addEventListener('click',function(e){var tr=e.target.closest('tr');if(!tr)return;var prev=body.querySelector('tr.selected');if(prev)prev.classList.remove('selected');tr.classList.add('selected');timeline(rows[+tr.dataset.i]);});
        var m=/^#q=(.*)$/.exec(location.hash);
        if(m){search.value=decodeURIComponent(m[1]);}
        apply();
        if(rows.length){timeline(rows[0]);var first=body.querySelector('tr');if(first)first.classList.add('selected');}
        if(m){['summary','at-risk'].forEach(function(id){document.getElementById(id).style.display='none';});}  // a #q= link opens on the table
        document.body.dataset.renderedMs=Math.round(performance.now()-t0);
        document.body.dataset.loadedMs=Math.round(performance.now());
        })();
        """
}
