/* Switchyard: keeps the partner's click id from the landing URL in a first-party cookie, so
   Checkout can be given it: client_reference_id: Switchyard.clickId(). No dependencies.
   <script src="https://HUB/sdk.js" data-days="30" data-param="click_id"></script>
   data-days: how long to keep it (the campaign's attribution window, default 30);
   data-param: the campaign's click parameter (default click_id). */
(function (w, d) {
  var s = d.currentScript;
  var attr = function (n, v) { return (s && s.getAttribute(n)) || v; };
  var days = parseFloat(attr('data-days', '30')) || 30;
  var id = /^clk_[0-9A-HJKMNP-TV-Z]{26}$/;
  var got = null;
  w.location.search.replace(/^\?/, '').split('&').forEach(function (kv) {
    var p = kv.split('='), name;
    try { name = decodeURIComponent(p[0]); } catch (e) { return; }
    if (name === attr('data-param', 'click_id') && id.test(p[1] || '')) got = p[1];
  });
  if (got) {
    d.cookie = 'sy_click_id=' + got + '; max-age=' + Math.round(days * 86400) +
      '; path=/; samesite=lax' + (w.location.protocol === 'https:' ? '; secure' : '');
  }
  w.Switchyard = {
    clickId: function () {
      var m = /(?:^|;\s*)sy_click_id=([^;]*)/.exec(d.cookie);
      return m && id.test(m[1]) ? m[1] : null;
    }
  };
})(window, document);
