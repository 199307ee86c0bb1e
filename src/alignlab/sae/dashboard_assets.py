"""Inline CSS and JavaScript of the SAE dashboard (``alignlab.sae.dashboard``); no external assets.

The index script reads the per-latent statistics from a ``<script type="application/json" id="latent-data">``
block and renders a sortable, paged table of every latent (131k latents sort in well under a second).
"""

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:76em}table{border-collapse:collapse}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}th{background:#f4f4f4}
th.sort{cursor:pointer;text-decoration:underline dotted}th.on{background:#ffe2c4}
td:first-child,th:first-child{text-align:left}
.ctx{font-family:ui-monospace,monospace;white-space:nowrap;overflow-x:auto;margin:2px 0;line-height:1.5}
.tok{white-space:pre;border-radius:2px}.ws{color:#999}.lat{border-top:2px solid #888;margin-top:1.5em}
.muted{color:#777}.band{margin:.4em 0 .2em 0;font-size:90%}.pager button{margin-right:.4em}
#idx tbody tr:hover{background:#f6f6ff}"""

INDEX_JS = """(function(){
var D=JSON.parse(document.getElementById('latent-data').textContent);
var N=D.density.length, PS=100, page=0, key=null, dir=-1;
var detail={}; D.detail.forEach(function(i){detail[i]=true;});
var cols=[['id','latent'],['density','density'],['max_act','max act']];
if(D.cos_dec){cols.push(['cos_dec','cos(d_i, r)'],['cos_enc','cos(enc_i, r)'],['corr','corr(f_i, x\\u00b7r\\u0302)']);}
var order=[]; for(var i=0;i<N;i++){order.push(i);}
function val(k,i){return k==='id'?i:D[k][i];}
function fmt(k,v){if(v===null){return '\\u2013';} if(k==='id'){return String(v);}
  return k==='density'?v.toExponential(2):v.toFixed(3);}
function sortBy(k){if(k===key){dir=-dir;}else{key=k;dir=k==='id'?1:-1;}
  order.sort(function(a,b){var x=val(k,a),y=val(k,b);
    if(x===null&&y===null){return a-b;} if(x===null){return 1;} if(y===null){return -1;}
    return x===y?a-b:dir*(x-y);});
  page=0; render();}
function render(){
  var head=document.querySelector('#idx thead tr'); head.innerHTML='';
  cols.forEach(function(c){var th=document.createElement('th'); th.className='sort'+(c[0]===key?' on':'');
    th.textContent=c[1]+(c[0]===key?(dir<0?' \\u25bc':' \\u25b2'):''); th.onclick=function(){sortBy(c[0]);};
    head.appendChild(th);});
  var body=document.querySelector('#idx tbody'); body.innerHTML='';
  order.slice(page*PS,(page+1)*PS).forEach(function(i){var tr=document.createElement('tr');
    cols.forEach(function(c){var td=document.createElement('td');
      if(c[0]==='id'&&detail[i]){var a=document.createElement('a'); a.href='#l'+i; a.textContent=i; td.appendChild(a);}
      else{td.textContent=fmt(c[0],val(c[0],i));}
      tr.appendChild(td);});
    body.appendChild(tr);});
  var pages=Math.max(1,Math.ceil(N/PS));
  document.getElementById('pageinfo').textContent='latents '+(page*PS+1)+'\\u2013'+Math.min(N,(page+1)*PS)+' of '+N+
    ' (page '+(page+1)+'/'+pages+'); linked ids have a detail section';}
document.getElementById('prev').onclick=function(){if(page>0){page--;render();}};
document.getElementById('next').onclick=function(){if((page+1)*PS<N){page++;render();}};
document.getElementById('goto').onchange=function(e){var i=parseInt(e.target.value,10);
  if(i>=0&&i<N){var p=order.indexOf(i); page=Math.floor(p/PS); render();
    if(detail[i]){location.hash='l'+i;}}};
sortBy(D.cos_dec?'cos_dec':'density');
})();"""
