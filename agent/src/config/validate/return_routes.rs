//! `[[return_route]]` checks: the gateway is on the link, one return route per link.

use super::super::diag::Kind;
use super::super::model::*;
use super::super::raw::{self, Item};
use super::{Names, Validator, at};

impl Validator<'_, '_, '_> {
    // ---- [[return_route]] ------------------------------------------------------------------

    pub(super) fn return_route(
        &mut self,
        item: &Item<raw::RawReturnRoute>,
        link_names: &Names,
        gateway_names: &Names,
        gateways: &[Option<Gateway>],
    ) -> Option<ReturnRoute> {
        let r = &item.value;
        let at = at(Kind::ReturnRoute, item, None);
        let o = &at.object;
        let link = self
            .required(&r.link, &at, &item.span, "link", "\"LINK\"")
            .and_then(|l| self.resolve(Kind::Link, link_names, l, o, "link"));
        let gateway = self
            .required(&r.gateway, &at, &item.span, "gateway", "\"GATEWAY\"")
            .and_then(|g| self.resolve(Kind::Gateway, gateway_names, g, o, "gateway"));
        if let (Some(l), Some(gw)) = (link, gateway.and_then(|g| gateways[g].as_ref()))
            && gw.link.index() != l
        {
            let link_name = r.link.as_ref().map_or("", |n| n.get_ref().as_str());
            let on = &self.doc.links[gw.link.index()]
                .value
                .name
                .as_ref()
                .map_or(String::new(), |n| n.get_ref().clone());
            let span = r.gateway.as_ref().map_or(item.span.clone(), |g| g.span());
            self.err(
                &span,
                o,
                Some("gateway"),
                format!(
                    "gateway '{}' is on link '{on}', not on link '{link_name}'; replies must \
                     leave over the link they arrived on: use a gateway of link '{link_name}'",
                    gw.name
                ),
            );
            return None;
        }
        if let Some(l) = link {
            let earlier = self.doc.return_routes[..item.index].iter().find(|e| {
                e.value
                    .link
                    .as_ref()
                    .and_then(|n| link_names.get(n.get_ref()))
                    .map(|(i, _)| *i)
                    == Some(l)
            });
            if let (Some(e), Some(n)) = (earlier, &r.link) {
                let line = self.sink.line(e.span.start);
                self.err(
                    &n.span(),
                    o,
                    Some("link"),
                    format!(
                        "link '{}' already has a return route at line {line}; keep one per link",
                        n.get_ref()
                    ),
                );
                return None;
            }
        }
        Some(ReturnRoute {
            link: LinkId(link? as u16),
            gateway: GatewayId(gateway? as u16),
        })
    }
}
