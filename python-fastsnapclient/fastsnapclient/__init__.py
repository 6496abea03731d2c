"""A client for fastsnap's REST service (``fastsnapclient.v1.client``) and its OpenStackClient plugin
(``fastsnapclient.osc``): ``openstack fastsnap ...`` finds the service in the Keystone catalogue (service type
:data:`SERVICE_TYPE`) and calls it with the user's keystoneauth session."""

from __future__ import annotations

# fastsnap's service type in the Keystone catalogue. It is not in OpenStack's service-types authority: a cloud
# registers it itself (`openstack service create --name fastsnap fastsnap`), as the test stack does.
SERVICE_TYPE = "fastsnap"
