// Small enhancements for the server-rendered pages; they work without it.
(function () {
  "use strict";
  // Inside Airflow's (sandboxed) frame: links to Airflow's own pages navigate the UI around the frame, and
  // links to TikTok open a tab from the UI's document, since the frame itself may not open one.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-airflow-path], a[target=_blank]");
    if (!link || window.top === window) return;
    try {
      var top = window.top;
      if (link.hasAttribute("data-airflow-path")) {
        top.history.pushState({}, "", link.getAttribute("href"));
        top.dispatchEvent(new PopStateEvent("popstate"));
      } else {
        var opener = top.document.createElement("a");
        opener.href = link.href;
        opener.target = "_blank";
        opener.rel = "noopener noreferrer";
        top.document.body.appendChild(opener);
        opener.click();
        opener.remove();
      }
      event.preventDefault();
    } catch (err) { /* not the same origin: follow the link normally */ }
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
