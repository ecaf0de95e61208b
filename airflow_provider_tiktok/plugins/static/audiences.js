// Small enhancements for the server-rendered pages; they work without it.
(function () {
  "use strict";
  // Links to Airflow's own pages open in the Airflow UI around this frame (not inside it).
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-airflow-path]");
    if (!link || window.top === window) return;
    try {
      window.top.history.pushState({}, "", link.getAttribute("href"));
      window.top.dispatchEvent(new PopStateEvent("popstate"));
      event.preventDefault();
    } catch (err) { /* different origin: follow the link normally */ }
  });

  // TikTok sizes arrive in the background: fill them in when they do, without reloading the page.
  var prefix = document.body.getAttribute("data-prefix") || "";
  var attempts = 0;
  function fillSizes() {
    var pending = document.querySelectorAll("td[data-size] .muted");
    var waiting = Array.prototype.filter.call(pending, function (el) { return el.textContent === "fetching…"; });
    if (!waiting.length || attempts++ > 20) return;
    fetch(prefix + "/api/audiences", { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        data.audiences.forEach(function (row) {
          var key = (row.advertiser_id || "") + "/" + (row.audience_id || row.audience_name || "");
          var cell = document.querySelector('td[data-size="' + CSS.escape(key) + '"]');
          var size = row.tiktok;
          if (!cell || !size) return;
          if (size.error) { cell.innerHTML = '<span class="muted"></span>'; cell.firstChild.textContent = size.error; return; }
          cell.textContent = size.cover_num == null ? "-" : Number(size.cover_num).toLocaleString("en-US");
          var badge = cell.nextElementSibling;
          if (badge) {
            var ok = size.is_valid && !size.is_expiring;
            badge.innerHTML = '<span class="badge ' + (ok ? "ok" : "warn") + '"></span>';
            badge.firstChild.textContent = (size.is_valid ? "valid" : "calculating") + (size.is_expiring ? ", expiring" : "");
          }
        });
        setTimeout(fillSizes, 3000);
      })
      .catch(function () { setTimeout(fillSizes, 5000); });
  }
  setTimeout(fillSizes, 1500);
})();
