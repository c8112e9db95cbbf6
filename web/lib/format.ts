// Money is integer KRW; times are shown in Korea Standard Time whatever the browser's zone.
const krw = new Intl.NumberFormat("ko-KR", { style: "currency", currency: "KRW", maximumFractionDigits: 0 });
const kst = new Intl.DateTimeFormat("ko-KR", {
  timeZone: "Asia/Seoul",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

export function formatKrw(value: number | null | undefined): string {
  return value === null || value === undefined ? "-" : krw.format(value);
}

export function formatRate(value: number | null | undefined): string {
  if (value === null || value === undefined) return "-";
  return `${value > 0 ? "+" : ""}${value.toFixed(2)}%`;
}

export function formatKst(iso: string | null | undefined): string {
  if (!iso) return "-";
  return `${kst.format(new Date(iso))} KST`;
}
