// Per-metric charts on the candidate page: this candidate's samples, run by run, over the band of
// the known-good's samples of the same series (min-max light, interquartile range darker, median
// dashed). The numbers come from the page itself (script#chart-data); plotly.js comes from the
// installed plotly package. Without either, the table below the charts is the whole story.
(function () {
  "use strict";

  function fmt(x) {
    return Number(x.toPrecision(4)).toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function draw(el, s) {
    var band = s.band;
    var color = s.flagged ? "#cf222e" : "#0969da";
    var shapes = [];
    var values = s.y.slice();
    if (band) {
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: band.low, y1: band.high,
                    fillcolor: "rgba(26,127,55,0.10)", line: { width: 0 }, layer: "below" });
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: band.q1, y1: band.q3,
                    fillcolor: "rgba(26,127,55,0.22)", line: { width: 0 }, layer: "below" });
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: band.median, y1: band.median,
                    line: { color: "#1a7f37", width: 1.5, dash: "dash" }, layer: "below" });
      values.push(band.low, band.high);
    }
    var lo = Math.min.apply(null, values);
    var hi = Math.max.apply(null, values);
    var pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.1 || 1;
    var trace = {
      x: s.x, y: s.y, type: "scatter", mode: "lines+markers", name: "this candidate",
      line: { color: color, width: 2 }, marker: { color: color, size: 7 },
      hovertemplate: "%{x}: %{y:.4g} " + s.unit + "<extra></extra>"
    };
    var layout = {
      margin: { l: 48, r: 8, t: 6, b: 30 }, height: el.clientHeight || 200,
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", showlegend: false,
      font: { size: 11, color: "#59636e" }, shapes: shapes,
      xaxis: { type: "category", fixedrange: true, automargin: true },
      yaxis: { range: [lo - pad, hi + pad], fixedrange: true, zeroline: false,
               gridcolor: "#eaeef2", automargin: true },
      annotations: band ? [{ xref: "paper", x: 1, xanchor: "right", y: band.median,
                             yanchor: "bottom", text: "median " + fmt(band.median),
                             showarrow: false, font: { size: 10, color: "#1a7f37" } }] : []
    };
    window.Plotly.react(el, [trace], layout, { displayModeBar: false, responsive: true });
    el.dataset.drawn = "1";
  }

  function drawAll() {
    var data = document.getElementById("chart-data");
    var box = document.querySelector(".charts");
    if (!data || !box || !window.Plotly) return;
    var series;
    try { series = JSON.parse(data.textContent); } catch (e) { return; }
    box.classList.add("ready");
    var numbers = document.querySelector("details.numbers");
    if (numbers) numbers.open = false;
    var pending = series.map(function (s) { return [document.getElementById(s.id), s]; })
      .filter(function (pair) { return pair[0]; });
    if (!("IntersectionObserver" in window)) {
      pending.forEach(function (pair) { draw(pair[0], pair[1]); });
      return;
    }
    var byId = {};
    pending.forEach(function (pair) { byId[pair[1].id] = pair[1]; });
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (!entry.isIntersecting) return;
        observer.unobserve(entry.target);
        draw(entry.target, byId[entry.target.id]);
      });
    }, { rootMargin: "200px" });
    pending.forEach(function (pair) { observer.observe(pair[0]); });
  }

  document.addEventListener("certifier:updated", function (event) {
    if (event.detail && event.detail.parts.indexOf("charts") >= 0) drawAll();
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
