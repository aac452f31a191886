// Live updates of a running job's page: open the job's event stream (Server-Sent Events, the
// session cookie authenticates it) and, on each event and at the end, tell htmx to fetch the page's
// live part again (`jobevent`, which the part's hx-trigger listens for). The browser's EventSource
// reconnects by itself and resumes after the last event it saw (Last-Event-ID). Without a stream
// the part's own slow polling carries on.
document.addEventListener("DOMContentLoaded", function () {
  var live = document.getElementById("live");
  var url = live && live.getAttribute("data-events");
  if (!url || !window.EventSource) return;
  var source = new EventSource(url);
  var seen = 0;
  function refresh() {
    seen += 1;
    document.documentElement.setAttribute("data-live-events", String(seen));  // for the tests
    document.body.dispatchEvent(new CustomEvent("jobevent"));
  }
  source.addEventListener("fine_tuning.job.event", refresh);
  source.addEventListener("done", function () {
    source.close();
    refresh();  // the live part answers HX-Refresh: the page reloads with the results
  });
});
