"""The studio's look: a compact theme with system fonts (nothing loaded from the network) and
the CSS for the header bar, status badges, progress bar and stat cards. Both go to `launch()`."""

from __future__ import annotations

import gradio as gr

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
                "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def studio_theme() -> gr.themes.Base:
    return gr.themes.Default(
        primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
        spacing_size="sm", radius_size="sm", text_size="sm",
        font=SYSTEM_FONTS, font_mono=MONO_FONTS,
    ).set(block_title_text_weight="600", block_info_text_size="*text_xs")


CSS = """
.gradio-container { max-width: 1480px !important; }
#studio-header { align-items: center; gap: 10px; padding: 8px 14px; margin-bottom: 4px;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  background: var(--background-fill-secondary); }
#brand { flex: 1 1 460px !important; margin: 0 !important; }
.brand { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.brand-name { font-size: 1.15rem; font-weight: 700; letter-spacing: .01em; }
.brand-version { color: var(--body-text-color-subdued); font-size: .8rem; }
.chip { display: inline-block; padding: 2px 9px; border-radius: 999px; font-size: .78rem;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary); }
.chip-warn { border-color: #dc2626; color: #dc2626; font-weight: 600; }
#header-job { display: flex; justify-content: flex-end; }
.status-badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600;
  font-size: .8rem; color: #fff; background: #64748b; }
.status-training, .status-sampling, .status-saving { background: #2563eb; }
.status-loading, .status-caching { background: #7c3aed; }
.status-paused, .status-stopping { background: #d97706; }
.status-finished { background: #16a34a; }
.status-stopped, .status-interrupted { background: #475569; }
.status-failed { background: #dc2626; }
.job-extra { margin-left: 8px; font-size: .85rem; color: var(--body-text-color-subdued); }
.job-panel { padding: 4px 2px; }
.job-message { margin: 6px 0 !important; color: var(--body-text-color-subdued); min-height: 1.2em; }
.progress { height: 8px; border-radius: 4px; background: var(--background-fill-secondary);
  border: 1px solid var(--border-color-primary); overflow: hidden; }
.progress-fill { height: 100%; background: #2563eb; transition: width .25s linear; }
.progress-fill.status-finished { background: #16a34a; }
.progress-fill.status-failed { background: #dc2626; }
.progress-fill.status-paused, .progress-fill.status-stopped { background: #d97706; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(78px, 1fr)); gap: 6px; margin-top: 8px; }
.facts { grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); }
.facts .stat-value { font-size: .85rem; font-weight: 500; white-space: normal; }
.stat { display: flex; flex-direction: column; padding: 5px 7px; min-width: 0; border-radius: var(--radius-md);
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary); }
.stat-label { font-size: .7rem; text-transform: uppercase; letter-spacing: .05em;
  color: var(--body-text-color-subdued); }
.stat-value { font-size: .9rem; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.job-panel .stats:not(.facts) { grid-template-columns: repeat(auto-fit, minmax(86px, 1fr)); }
.job-panel .stat-value { white-space: normal; overflow: hidden; text-overflow: ellipsis; }
.stat-of { font-size: .72rem; font-weight: 500; color: var(--body-text-color-subdued); white-space: nowrap; }
.error-callout { padding: 10px 12px; border-radius: var(--radius-md); border: 1px solid #dc2626;
  background: rgba(220, 38, 38, .08); white-space: pre-wrap; }
.controls button { white-space: nowrap; }
.notice p, #notice p { margin: 0 !important; }
#header-right { flex: 1 1 440px !important; gap: 2px !important; }
#header-job .job-extra { white-space: nowrap; }
#config-check { font-size: .8rem; color: var(--body-text-color-subdued); }
#notice { font-size: .8rem; color: var(--body-text-color-subdued); text-align: right; min-height: 0; }
#notice details { text-align: left; }
#notice details pre { white-space: pre-wrap; max-height: 14em; overflow: auto; font-size: .75rem; margin: 2px 0 0; }
.refresh { align-self: center; }
/* clip, not hidden: it clips the same, but is no scroll container, so position: sticky can work inside it */
.gradio-container { overflow: clip !important; }
#dataset-actions { position: sticky; top: 0; z-index: 20; align-items: center; padding: 6px 10px;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  background: var(--background-fill-secondary); box-shadow: 0 2px 6px rgba(0, 0, 0, .08); }
#dataset-actions { flex-wrap: nowrap !important; }
#dataset-actions #dataset-status { flex: 1 1 0 !important; min-width: 0 !important; }
#dataset-actions button { flex: 0 0 auto !important; white-space: nowrap; }
#dataset-gallery .gallery-item:hover .caption-label { white-space: normal; max-width: 100%; overflow: visible;
  opacity: 1; z-index: 5; }
.invalid input, .invalid textarea, .invalid .wrap { border-color: #dc2626 !important;
  box-shadow: 0 0 0 1px #dc2626 !important; }
.chart-legend { display: flex; flex-wrap: wrap; gap: 6px; padding: 4px 6px 2px; }
.legend-chip { display: inline-flex; align-items: center; gap: 6px; padding: 1px 9px; border-radius: 999px;
  font-size: .75rem; border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary); }
.legend-chip i { display: inline-block; flex: none; }
.legend-line { width: 14px; height: 3px; border-radius: 2px; }
.legend-dot { width: 9px; height: 9px; border-radius: 50%; }
#grid-gallery .caption-label { max-width: calc(100% - 8px); white-space: normal; overflow-wrap: anywhere;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
"""
