// flowmon console: live figures and charts on the overview, and blocks of other pages that
// refresh themselves. Hand-written, no dependencies. Text from the server is only ever set
// with textContent (attackers write much of it).
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HOUR = 3600;
  var WIDTH = 720;
  var HEIGHT = 160;
  var POLL_MS = 2000;
  var POINT_SECONDS = 10;

  function scaled(value, unit) {
    var prefixes = ["", "k", "M", "G", "T", "P"];
    var i = 0;
    while (Math.abs(value) >= 1000 && i < prefixes.length - 1) {
      value /= 1000;
      i++;
    }
    return (i === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + prefixes[i] + unit;
  }

  function format(value, kind) {
    if (value === null || value === undefined) return "-";
    switch (kind) {
      case "count": return Math.round(value).toLocaleString("en-US");
      case "rate": return scaled(value, "/s");
      case "byte-rate": return scaled(value, "B/s");
      case "percent": return (value * 100).toFixed(1) + " %";
      default: return String(value);
    }
  }

  function el(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var name in attrs) node.setAttribute(name, attrs[name]);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- Overview --------------------------------------------------------------------------

  function Overview(root) {
    this.root = root;
    this.keep = parseInt(root.getAttribute("data-points"), 10) || 360;
    this.made = 0;
    this.points = [];
    this.timer = null;
  }

  Overview.prototype.start = function () {
    var self = this;
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && self.timer === null) self.poll();
    });
    this.poll();
  };

  Overview.prototype.schedule = function () {
    var self = this;
    this.timer = null;
    // A hidden tab costs the agent nothing: polling resumes when it is shown again.
    if (!document.hidden) this.timer = setTimeout(function () { self.poll(); }, POLL_MS);
  };

  Overview.prototype.poll = function () {
    var self = this;
    fetch("/api/overview?since=" + this.made, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (update) {
        if (update) self.apply(update);
      })
      .catch(function () {})
      .then(function () { self.schedule(); });
  };

  Overview.prototype.apply = function (update) {
    var figures = update.figures;
    this.root.setAttribute("data-updated", String(figures.time));
    var nodes = this.root.querySelectorAll("[data-figure]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var key = node.getAttribute("data-figure");
      if (key === "redis") {
        this.showRedis(node, update.redis);
      } else if (key === "spool") {
        node.textContent = figures.spool_writes === null || figures.spool_writes === undefined
          ? ""
          : "spool " + format(figures.spool_writes, "count") + " writes, " + scaled(figures.spool_bytes, "B");
      } else if (key in figures) {
        node.textContent = format(figures[key], node.getAttribute("data-format"));
      }
    }
    if (update.made < this.made) this.points = [];
    this.points = this.points.concat(update.points).slice(-this.keep);
    this.made = update.made;
    this.draw(figures.time);
  };

  Overview.prototype.showRedis = function (node, redis) {
    node.classList.remove("good", "bad");
    if (redis.state === "reachable") {
      node.textContent = "reachable";
      node.classList.add("good");
    } else if (redis.state === "unreachable") {
      node.textContent = "unreachable";
      node.title = redis.detail;
      node.classList.add("bad");
    } else {
      node.textContent = "none";
    }
  };

  Overview.prototype.draw = function (now) {
    var points = this.points;
    // The last hour, or since the first point when the agent has run for less.
    var span = points.length > 0 ? Math.min(HOUR, now - points[0].time + POINT_SECONDS) : HOUR;
    var start = now - span;
    var x = function (t) { return Math.max(0, (t - start) / span * WIDTH); };
    var slot = Math.max(WIDTH * POINT_SECONDS / span - 0.5, 0.5);
    var range = span >= HOUR - POINT_SECONDS ? "last hour" : "last " + Math.max(1, Math.round(span / 60)) + " min";
    this.traffic(points, x, range);
    this.stacked("attacks", points, "detections", x, slot, range);
    this.stacked("owners", points, "analysed", x, slot, range);
  };

  // Says why a chart is empty.
  function empty(svg, text) {
    var label = el("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", "class": "empty" });
    label.textContent = text;
    svg.appendChild(label);
  }

  function setMax(id, text) {
    var node = document.querySelector('[data-max="' + id + '"]');
    if (node) node.textContent = text;
  }

  Overview.prototype.traffic = function (points, x, range) {
    var svg = document.getElementById("chart-traffic");
    if (!svg) return;
    clear(svg);
    if (points.length === 0) {
      empty(svg, "the first point comes 10 s after start");
      return;
    }
    var maxBytes = 0, maxPackets = 0;
    points.forEach(function (p) {
      maxBytes = Math.max(maxBytes, p.bytes_per_s);
      maxPackets = Math.max(maxPackets, p.packets_per_s);
    });
    var y = function (value, max) { return HEIGHT - (max > 0 ? value / max * (HEIGHT - 6) : 0); };
    var area = "M" + x(points[0].time) + "," + HEIGHT;
    var line = "";
    points.forEach(function (p, i) {
      area += " L" + x(p.time) + "," + y(p.bytes_per_s, maxBytes);
      line += (i === 0 ? "M" : " L") + x(p.time) + "," + y(p.packets_per_s, maxPackets);
    });
    area += " L" + x(points[points.length - 1].time) + "," + HEIGHT + " Z";
    svg.appendChild(el("path", { d: area, "class": "area c0" }));
    svg.appendChild(el("path", { d: line, "class": "line c1" }));
    setMax("traffic", range + ", peak " + scaled(maxBytes, "B/s") + ", " + scaled(maxPackets, "/s"));
  };

  Overview.prototype.stacked = function (id, points, key, x, slot, range) {
    var svg = document.getElementById("chart-" + id);
    if (!svg) return;
    clear(svg);
    var max = 0;
    points.forEach(function (p) {
      max = Math.max(max, p[key].reduce(function (a, b) { return a + b; }, 0));
    });
    setMax(id, range + ", peak " + format(max, "count") + " per 10 s");
    if (max === 0) {
      empty(svg, points.length === 0 ? "the first point comes 10 s after start" : "none in the last hour");
      return;
    }
    points.forEach(function (p) {
      var top = HEIGHT;
      p[key].forEach(function (n, series) {
        if (n === 0) return;
        var h = n / max * (HEIGHT - 6);
        top -= h;
        svg.appendChild(el("rect", {
          x: x(p.time) - slot, y: top, width: Math.max(slot - 0.3, 0.5), height: h, "class": "c" + series
        }));
      });
    });
  };

  // --- Blocks that refresh themselves ------------------------------------------------------

  function refresh(id, seconds) {
    var timer = null;
    function again() {
      timer = document.hidden ? null : setTimeout(tick, seconds * 1000);
    }
    function tick() {
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401 || response.redirected) {
            window.location.reload();
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
          var old = document.getElementById(id);
          if (fresh && old) old.replaceWith(document.importNode(fresh, true));
        })
        .catch(function () {})
        .then(again);
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null) again();
    });
    again();
  }

  function start() {
    var overview = document.getElementById("overview");
    if (overview && window.fetch) new Overview(overview).start();
    var blocks = document.querySelectorAll("[data-refresh][id]");
    for (var i = 0; i < blocks.length; i++) {
      var seconds = parseFloat(blocks[i].getAttribute("data-refresh"));
      if (seconds > 0 && window.fetch && window.DOMParser) refresh(blocks[i].id, seconds);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
