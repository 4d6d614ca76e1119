// The local stack's status page: polls the stack's JSON and redraws it in place.
// Everything the API returns reaches the page as text or attribute values, never as markup.
"use strict";

const POLL_MS = 2000;
const MAX_ROWS = 100;
const API = {
  status: "/_local/api/status",
  accounts: "/_local/api/accounts",
  dashboards: "/_local/api/dashboards",
};
// d3's category10, the palette CloudWatch graphs draw with.
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
// CloudWatch draws these views from one value per series, not over time.
const AGGREGATE_VIEWS = new Set(["bar", "pie", "singleValue"]);
const STATE_ORDER = { ALARM: 0, INSUFFICIENT_DATA: 1, OK: 2 };

const alarmStates = new Map(); // alarm name -> state, for the dashboards' alarm widgets
const dashboardViews = new Map(); // dashboard name -> {section, grid, widgets: Map(index -> view)}

// ------------------------------------------------------------------------------- helpers

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function cell(text, attributes = {}) {
  return element("td", attributes, text === null || text === undefined ? "—" : String(text));
}

function clockTime(iso) {
  return element("time", { datetime: iso, title: iso }, iso ? iso.slice(11, 19) : "—");
}

function clockMinutes(seconds) {
  return new Date(seconds * 1000).toISOString().slice(11, 16);
}

function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en");
  return String(Number(value.toFixed(2)));
}

function fillTable(id, rows, columns, emptyText) {
  const body = document.querySelector(`#${id} tbody`);
  if (rows.length) {
    body.replaceChildren(...rows);
  } else {
    body.replaceChildren(element("tr", { class: "empty" }, element("td", { colspan: columns }, emptyText)));
  }
}

function stateBadge(state) {
  return element("span", { class: "state", "data-state": state }, state);
}

// ------------------------------------------------------------------------------- status

function renderStatus(status) {
  const clock = status.clock;
  document.getElementById("clock").textContent =
    `local clock ${clock.now} UTC, running at ${clock.speed}× real time`;

  fillTable("events", status.requests.slice(0, MAX_ROWS).map(requestRow), 6, "no requests yet");

  const alarms = [...status.alarms].sort(
    (a, b) => (STATE_ORDER[a.state] ?? 3) - (STATE_ORDER[b.state] ?? 3) || a.name.localeCompare(b.name),
  );
  alarmStates.clear();
  for (const alarm of alarms) alarmStates.set(alarm.name, alarm.state);
  fillTable("alarms", alarms.map(alarmRow), 3, "the template has no alarms");

  fillTable("alarm-changes", status.alarm_changes.slice(0, MAX_ROWS).map(alarmChangeRow), 5, "no changes yet");
  fillTable("alerts", status.alerts.slice(0, MAX_ROWS).map(alertRow), 6, "no alerts sent yet");
  fillTable("schedules", status.schedules.map(scheduleRow), 4, "no schedules");
}

function requestRow(request) {
  // A handler answers with an outcome, or with the problem (error code and message) it refused.
  const refusal = [request.error, request.message].filter(Boolean).join(": ");
  const rejected = request.status >= 400;
  return element(
    "tr",
    {
      "data-event-id": request.id,
      "data-route": request.route,
      "data-status": request.status,
      "data-outcome": request.outcome,
      "data-error": request.error,
      class: rejected ? "rejected" : null,
    },
    element("td", {}, clockTime(request.at)),
    cell(request.route, { title: request.function }),
    cell(request.status, { class: "http-status" }),
    cell(request.id, { class: "wrap" }),
    cell(request.type, { class: "wrap" }),
    cell(request.outcome || refusal || null, { class: "outcome wrap" }),
  );
}

function alarmRow(alarm) {
  const name = element("td", { title: alarm.id }, alarm.name);
  if (alarm.composite) name.append(" ", element("span", { class: "tag" }, "composite"));
  return element(
    "tr",
    {
      "data-alarm": alarm.id,
      "data-alarm-name": alarm.name,
      "data-state": alarm.state,
      "data-severity": alarm.severity,
    },
    name,
    cell(alarm.severity, { class: "severity", "data-severity": alarm.severity }),
    element("td", {}, stateBadge(alarm.state)),
  );
}

function alarmChangeRow(change) {
  return element(
    "tr",
    { "data-alarm": change.alarm, "data-from": change.from, "data-to": change.to },
    element("td", {}, clockTime(change.at)),
    cell(change.alarm, { class: "wrap" }),
    element("td", {}, stateBadge(change.from), " → ", stateBadge(change.to)),
    cell(change.topics.join(", ") || "no topic", { class: "wrap" }),
    cell(change.reason, { class: "reason wrap" }),
  );
}

function alertRow(alert) {
  return element(
    "tr",
    { "data-receiver": alert.receiver, "data-alert": alert.name, "data-kind": alert.kind },
    element("td", {}, clockTime(alert.at)),
    cell(alert.receiver, { class: "receiver" }),
    cell(alert.kind),
    cell(alert.name, { class: "wrap" }),
    cell(alert.severity, { class: "severity", "data-severity": alert.severity }),
    cell(alert.summary, { class: "reason wrap" }),
  );
}

function scheduleRow(schedule) {
  const last = schedule.last;
  const lastRun = last
    ? element(
        "td",
        { "data-succeeded": last.succeeded },
        clockTime(last.at),
        last.succeeded ? " ok" : ` failed: ${last.error || "unknown error"}`,
      )
    : cell("not yet");
  return element(
    "tr",
    { "data-function": schedule.function, "data-schedule": schedule.name },
    cell(schedule.function),
    cell(`${schedule.expression}${schedule.zone && schedule.zone !== "UTC" ? ` (${schedule.zone})` : ""}`),
    element("td", {}, clockTime(schedule.next)),
    lastRun,
  );
}

// ----------------------------------------------------------------------------- accounts

function renderAccounts(accounts) {
  fillTable("accounts", accounts.map(accountRow), 5, "no accounts yet: send a webhook");
}

function accountRow(account) {
  const tier = element("td", { class: "tier" }, account.tier);
  if (account.override) tier.append(" ", element("span", { class: "tag" }, "override"));
  const subscription = element("td", {}, account.subscription_status || "none");
  if (account.customer) subscription.append(element("div", { class: "small" }, account.customer));
  return element(
    "tr",
    {
      "data-account": account.account,
      "data-tier": account.tier,
      "data-subscription-status": account.subscription_status,
    },
    cell(account.account),
    tier,
    subscription,
    cell(account.mrr_text, { class: "mrr" }),
    element("td", {}, ...account.usage.map(usageBar)),
  );
}

function usageBar(usage) {
  const share = usage.quota > 0 ? usage.used / usage.quota : usage.used > 0 ? 1 : 0;
  const fill = element("div", { class: "fill" });
  fill.style.width = `${Math.min(100, share * 100)}%`;
  const level = share >= 1 ? "full" : share >= 0.8 ? "high" : "normal";
  return element(
    "div",
    { class: "usage", "data-feature": usage.feature, "data-used": usage.used, "data-quota": usage.quota, "data-level": level },
    element("span", { class: "small" }, `${usage.feature}: ${usage.used} / ${usage.quota} per ${usage.period}`),
    element("div", { class: "bar" }, fill),
  );
}

// --------------------------------------------------------------------------- dashboards

function renderDashboards(dashboards) {
  const root = document.getElementById("dashboards");
  const names = new Set(dashboards.map((dashboard) => dashboard.name));
  for (const [name, view] of dashboardViews) {
    if (!names.has(name)) {
      for (const widget of view.widgets.values()) widget.destroy();
      view.section.remove();
      dashboardViews.delete(name);
    }
  }
  for (const dashboard of dashboards) {
    let view = dashboardViews.get(dashboard.name);
    if (!view) {
      const grid = element("div", { class: "grid" });
      const variables = element("p", { class: "variables" });
      const section = element("section", { class: "dashboard", "data-dashboard": dashboard.name },
        element("h3", {}, dashboard.name), variables, grid);
      root.append(section);
      view = { section, grid, variables, widgets: new Map() };
      dashboardViews.set(dashboard.name, view);
    }
    view.variables.replaceChildren(...variableNodes(dashboard.variables || []));
    updateDashboard(view, dashboard);
  }
}

// The dashboard's variables with the value each drew here: the console's default for it.
function variableNodes(variables) {
  return variables.map((variable) => element(
    "span",
    { class: "variable", "data-variable": variable.id, "data-value": variable.value ?? "" },
    variable.value === null
      ? `${variable.label}: ${variable.note || "no value"}`
      : `${variable.label} (${variable.property}): ${variable.value}`,
  ));
}

function updateDashboard(view, dashboard) {
  dashboard.widgets.forEach((widget, index) => {
    const shape = widgetShape(widget);
    let current = view.widgets.get(index);
    if (!current || current.shape !== shape) {
      const fresh = widgetView(widget, shape);
      if (current) {
        current.destroy();
        current.node.replaceWith(fresh.node);
      } else {
        view.grid.append(fresh.node);
      }
      view.widgets.set(index, fresh);
      current = fresh;
    }
    current.update(widget, dashboard);
  });
  for (const [index, current] of view.widgets) {
    if (index >= dashboard.widgets.length) {
      current.destroy();
      current.node.remove();
      view.widgets.delete(index);
    }
  }
}

// What, if it changes, needs the widget built anew rather than its data replaced.
function widgetShape(widget) {
  const series = (widget.series || []).map((line) => [line.label, line.yAxis]);
  return JSON.stringify([
    widget.type, widget.x, widget.y, widget.width, widget.height, widget.title, widget.note,
    widget.view, widget.yRange, widget.annotations, widget.alarms, widget.markdown, series,
  ]);
}

function gridPlacement(node, widget) {
  const whole = (value, fallback) => (Number.isInteger(value) && value >= 0 ? value : fallback);
  node.style.gridColumn = `${whole(widget.x, 0) + 1} / span ${Math.max(1, whole(widget.width, 6))}`;
  node.style.gridRow = `${whole(widget.y, 0) + 1} / span ${Math.max(1, whole(widget.height, 6))}`;
}

function widgetView(widget, shape) {
  const node = element("div", { class: "widget", "data-widget": widget.title, "data-type": widget.type });
  gridPlacement(node, widget);
  if (widget.title) node.append(element("h4", {}, widget.title));
  const view = { node, shape, update: () => {}, destroy: () => {} };
  if (widget.note) {
    node.append(element("p", { class: "note" }, widget.note));
  } else if (widget.type === "text") {
    node.classList.add("text");
    node.append(...markdownNodes(widget.markdown || ""));
  } else if (widget.type === "alarm") {
    alarmWidget(view, widget);
  } else if (widget.type === "metric" && widget.series.length === 0) {
    node.append(element("p", { class: "no-data" }, "No data available."));
  } else if (widget.type === "metric") {
    metricWidget(view, widget);
  }
  return view;
}

// The markdown of text widgets, as far as headings and links; everything else stays text.
function markdownNodes(markdown) {
  return markdown
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) return element(`h${Math.min(6, heading[1].length + 3)}`, {}, ...inlineNodes(heading[2]));
      return element("p", {}, ...inlineNodes(line));
    });
}

function inlineNodes(text) {
  const nodes = [];
  let rest = 0;
  for (const link of text.matchAll(/\[([^\]]+)\]\(([^)\s]+)\)/g)) {
    nodes.push(text.slice(rest, link.index));
    // Only web links: a javascript: or data: URL from a template has no business in a page.
    if (/^https?:\/\//i.test(link[2])) {
      nodes.push(element("a", { href: link[2], rel: "noopener noreferrer", target: "_blank" }, link[1]));
    } else {
      nodes.push(link[0]);
    }
    rest = link.index + link[0].length;
  }
  nodes.push(text.slice(rest));
  return nodes;
}

function alarmWidget(view, widget) {
  const chips = widget.alarms.map((name) => element("li", { "data-alarm-name": name }, name));
  view.node.append(element("ul", { class: "alarm-chips" }, ...chips));
  view.update = () => {
    for (const chip of chips) {
      chip.setAttribute("data-state", alarmStates.get(chip.getAttribute("data-alarm-name")) || "UNKNOWN");
    }
  };
}

function metricWidget(view, widget) {
  const aggregate = AGGREGATE_VIEWS.has(widget.view);
  if (aggregate || widget.stacked) {
    const how = aggregate ? `${widget.view} view: drawn as bars of each line's latest value` : "stacked in CloudWatch, lines here";
    view.node.append(element("p", { class: "caption" }, how));
  }
  const box = element("div", { class: "chart" });
  view.node.append(box);
  view.node.setAttribute("data-series", widget.series.length);
  let plot = null;
  let range = [0, 1];
  view.update = (current, dashboard) => {
    const data = aggregate ? latestValues(current.series) : alignedSeries(current.series);
    // A point stands at the start of its period, which for the first may be before the range.
    range = [Math.min(dashboard.start, data[0][0] ?? dashboard.start), dashboard.end];
    if (plot) {
      plot.setData(data);
      return;
    }
    const options = aggregate ? barOptions(current) : timeSeriesOptions(current, () => range);
    plot = new uPlot({ ...options, ...chartSize(box, 0) }, data, box);
    fitChart(plot, box);
  };
  view.destroy = () => plot && plot.destroy();
  view.fit = () => plot && fitChart(plot, box);
}

function chartSize(box, legendHeight) {
  return { width: Math.max(120, box.clientWidth), height: Math.max(60, box.clientHeight - legendHeight) };
}

// uPlot's size is the plot's, legend excluded: measure the legend once drawn, then fit the box.
function fitChart(plot, box) {
  const legend = plot.root.querySelector(".u-legend");
  plot.setSize(chartSize(box, legend ? legend.offsetHeight : 0));
}

function alignedSeries(series) {
  const times = [...new Set(series.flatMap((line) => line.points.map(([at]) => at)))].sort((a, b) => a - b);
  const columns = series.map((line) => {
    const byTime = new Map(line.points);
    return times.map((at) => (byTime.has(at) ? byTime.get(at) : null));
  });
  return [times, ...columns];
}

function latestValues(series) {
  const latest = series.map((line) => (line.points.length ? line.points[line.points.length - 1][1] : null));
  return [series.map((_, index) => index), latest];
}

function yRange(limits, annotations) {
  return (_plot, dataMin, dataMax) => {
    // CloudWatch keeps the annotation lines in view, so they count as data here.
    const values = [dataMin, dataMax, ...annotations.map((line) => line.value)].filter((v) => v !== null);
    const [low, high] = values.length
      ? uPlot.rangeNum(Math.min(...values), Math.max(...values), 0.1, true)
      : [0, 1];
    return [limits && limits.min !== undefined ? limits.min : low, limits && limits.max !== undefined ? limits.max : high];
  };
}

function annotationHook(annotations) {
  return (plot) => {
    const context = plot.ctx;
    const { left, top, width, height } = plot.bbox;
    context.save();
    context.font = `${11 * devicePixelRatio}px sans-serif`;
    context.textAlign = "right";
    for (const line of annotations) {
      const scale = line.yAxis === "right" ? "y2" : "y";
      if (!plot.scales[scale] || plot.scales[scale].min === null) continue;
      const y = Math.round(plot.valToPos(line.value, scale, true));
      const colour = line.color || "#d13212";
      if (line.fill) {
        // A colour threshold: the side of the line it names is shaded, even when the line is out of view.
        const edge = Math.min(Math.max(y, top), top + height);
        const [from, to] = line.fill === "above" ? [top, edge] : [edge, top + height];
        context.fillStyle = `${colour}1f`;
        context.fillRect(left, from, width, to - from);
      }
      if (y < top || y > top + height) continue;
      context.strokeStyle = colour;
      context.fillStyle = colour;
      context.lineWidth = devicePixelRatio;
      context.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      context.beginPath();
      context.moveTo(left, y);
      context.lineTo(left + width, y);
      context.stroke();
      // A line whose fill is below it labels its own side, so two thresholds at one value stay legible.
      const labelY = line.fill === "below" ? y + 12 * devicePixelRatio : y - 3 * devicePixelRatio;
      context.fillText(line.label, left + width - 4 * devicePixelRatio, labelY);
    }
    context.restore();
  };
}

function timeSeriesOptions(widget, currentRange) {
  const right = widget.series.some((line) => line.yAxis === "right")
    || widget.annotations.some((line) => line.yAxis === "right");
  const scales = {
    x: { time: true, range: () => currentRange() },
    y: { range: yRange(widget.yRange.left, widget.annotations.filter((line) => line.yAxis !== "right")) },
  };
  const axes = [{ values: (_plot, splits) => splits.map(clockMinutes) }, { size: 50 }];
  if (right) {
    scales.y2 = { range: yRange(widget.yRange.right, widget.annotations.filter((line) => line.yAxis === "right")) };
    axes.push({ scale: "y2", side: 1, size: 50, grid: { show: false } });
  }
  return {
    tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
    scales,
    axes,
    series: [
      { label: "UTC", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" },
      ...widget.series.map((line, index) => ({
        label: line.label,
        scale: line.yAxis === "right" ? "y2" : "y",
        stroke: PALETTE[index % PALETTE.length],
        width: 1.5,
        // CloudWatch joins a line's datapoints across the periods that have none.
        spanGaps: true,
        points: { show: true, size: 5 },
        value: (_plot, value) => formatValue(value),
      })),
    ],
    hooks: { draw: [annotationHook(widget.annotations)] },
  };
}

function barOptions(widget) {
  const labels = widget.series.map((line) => line.label);
  return {
    legend: { show: false },
    scales: {
      x: { time: false, range: [-0.5, labels.length - 0.5] },
      y: { range: yRange(widget.yRange.left, widget.annotations) },
    },
    axes: [
      { splits: () => labels.map((_, index) => index), values: (_plot, splits) => splits.map((i) => labels[i] ?? "") },
      { size: 50 },
    ],
    series: [
      {},
      {
        label: "latest",
        stroke: PALETTE[0],
        fill: `${PALETTE[0]}bb`,
        paths: uPlot.paths.bars({ size: [0.6, 80] }),
        points: { show: false },
      },
    ],
    hooks: { draw: [annotationHook(widget.annotations)] },
  };
}

function fitAllCharts() {
  for (const view of dashboardViews.values()) {
    for (const widget of view.widgets.values()) if (widget.fit) widget.fit();
  }
}

// ------------------------------------------------------------------------------- polling

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(`${url}: HTTP ${response.status}${body && body.message ? ` (${body.message})` : ""}`);
  }
  return body;
}

async function poll() {
  const [status, accounts, dashboards] = await Promise.allSettled(
    [API.status, API.accounts, API.dashboards].map(fetchJson),
  );
  const problems = [];
  // The status first: the dashboards' alarm widgets take their colours from it.
  for (const [result, render] of [[status, renderStatus], [accounts, renderAccounts], [dashboards, renderDashboards]]) {
    try {
      if (result.status === "rejected") throw result.reason;
      render(result.value);
    } catch (error) {
      problems.push(error.message);
    }
  }
  const connection = document.getElementById("connection");
  connection.setAttribute("data-state", problems.length ? "error" : "ok");
  connection.textContent = problems.length
    ? `could not update: ${problems.join("; ")}`
    : `updated ${new Date().toISOString().slice(11, 19)} UTC, every ${POLL_MS / 1000} s`;
  setTimeout(poll, POLL_MS);
}

let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(fitAllCharts, 100);
});
poll();
