// A message still on its way: reload its page every few seconds, unless the user is typing or
// has selected text (a reload would take it away).
(function () {
  var seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA");
    if (!typing && String(window.getSelection()) === "") window.location.reload();
  }, seconds * 1000);
})();
