"use client";

// The equity curve (end-of-day account value, KRW) and its drawdown from the running peak (%), Chart.js.
import {
  CategoryScale,
  Chart as ChartJS,
  Filler,
  Legend,
  LinearScale,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { Line } from "react-chartjs-2";
import { formatKrw } from "@/lib/format";
import type { EquityPoint } from "@/lib/live";

ChartJS.register(CategoryScale, LinearScale, PointElement, LineElement, Filler, Legend, Tooltip);

export function EquityChart({
  points,
  labels,
}: {
  points: EquityPoint[];
  labels: { equity: string; drawdown: string; summary: string };
}) {
  const last = points[points.length - 1];
  const worst = Math.min(...points.map((p) => p.drawdown));
  return (
    <figure className="rounded-lg bg-white p-4 shadow-sm">
      <div className="relative h-56">
        <Line
          role="img"
          aria-label={`${labels.summary}: ${formatKrw(last.equity)}, ${labels.drawdown} ${worst.toFixed(2)}%`}
          data={{
            labels: points.map((p) => p.day),
            datasets: [
              {
                label: labels.equity,
                data: points.map((p) => p.equity),
                borderColor: "#1d4ed8",
                backgroundColor: "#1d4ed8",
                yAxisID: "y",
                tension: 0.2,
              },
              {
                label: labels.drawdown,
                data: points.map((p) => p.drawdown),
                borderColor: "#b91c1c",
                backgroundColor: "rgba(185, 28, 28, 0.12)",
                fill: true,
                yAxisID: "dd",
                tension: 0.2,
              },
            ],
          }}
          options={{
            maintainAspectRatio: false,
            animation: false,
            interaction: { mode: "index", intersect: false },
            scales: {
              y: { position: "left", ticks: { callback: (v) => formatKrw(Number(v)) } },
              dd: { position: "right", max: 0, grid: { drawOnChartArea: false }, ticks: { callback: (v) => `${v}%` } },
            },
          }}
        />
      </div>
      <figcaption className="num mt-2 text-sm text-slate-700" data-testid="equity-summary">
        {labels.summary}: {formatKrw(last.equity)} · {labels.drawdown} {worst.toFixed(2)}%
      </figcaption>
    </figure>
  );
}
